"""`hyperrun run`: from a RunSpec to a finished process, through one transient VM."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from hyperrun import capabilities
from hyperrun.containers import boot, mounts, names, network, pool, reaper, volumes
from hyperrun.containers import records as state
from hyperrun.containers.process import FORWARDED_SIGNALS, Terminal, merge_env
from hyperrun.errors import (
    EXIT_HYPERRUN,
    BootAssetsMissing,
    HyperrunError,
    ImageNotFound,
    UsageError,
)
from hyperrun.images.disk import create_overlay, share_with_qemu
from hyperrun.images.model import Image, ImageConfig
from hyperrun.images.store import ImageStore
from hyperrun.spec import Accel, ProcessSpec, PullPolicy, RunSpec
from hyperrun.store import Store, remove_path
from hyperrun.vm import accel as accel_mod
from hyperrun.vm import hypervisor, monitor
from hyperrun.vm.protocol import CTL_MAX, encode_fields

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class BootAssets:
    kernel: Path
    initrd: Path


def boot_assets(store: Store, kernel: Path | None) -> BootAssets:
    """The guest kernel and initrd: --kernel or the ones scripts/setup installed."""
    kernel = kernel or store.boot / "vmlinuz"
    initrd = store.boot / "initrd.img"
    if not kernel.is_file():
        raise BootAssetsMissing("guest kernel", str(kernel))
    if not initrd.is_file():
        raise BootAssetsMissing("guest initrd", str(initrd))
    monitor.binary(store.boot)  # needed once the VM is up: missing, refuse before
    return BootAssets(kernel.absolute(), initrd.absolute())


def entrypoint_and_cmd(config: ImageConfig,
                       run: RunSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The entrypoint and command the process gets, from the image and the command line."""
    if run.entrypoint is not None:
        # An explicit --entrypoint also drops the image's Cmd; "" clears the entrypoint.
        return run.entrypoint, run.command
    return tuple(config.entrypoint or ()), run.command or tuple(config.cmd or ())


def process_spec(config: ImageConfig, run: RunSpec, hostname: str) -> ProcessSpec:
    """Combine the image config with the command line exactly as docker does."""
    entrypoint, cmd = entrypoint_and_cmd(config, run)
    args = (*entrypoint, *cmd)
    if not args:
        raise UsageError("no command specified", hint="give a command after the image name")
    env = tuple(config.env or ())
    if not any(e.startswith("PATH=") for e in env):
        env = (DEFAULT_PATH, *env)
    implicit = [f"HOSTNAME={hostname}"]
    if run.tty:
        implicit.append("TERM=xterm")
    env = merge_env((*implicit, *env), run.env)
    return ProcessSpec(
        args=args,
        env=env,
        cwd=run.workdir or config.working_dir or "/",
        user=run.user if run.user is not None else (config.user or ""),
        tty=run.tty,
        stdin=run.interactive,
        capabilities=run.capabilities,
    )


def resolve_image(store: Store, run: RunSpec, pull: Callable[[str], Image]) -> Image:
    """The image to run: from the store, or pulled (by `pull`) as --pull says."""
    if run.pull is not PullPolicy.ALWAYS:
        try:
            return ImageStore(store).get(run.image)
        except ImageNotFound:
            if run.pull is PullPolicy.NEVER:
                raise
        if not run.quiet:
            print(f"Unable to find image '{run.image}' locally", file=sys.stderr, flush=True)
    return pull(run.image)


def check_exec_size(process: ProcessSpec) -> None:
    """Refuse, before any VM boots, a process spec that cannot reach the guest.

    The EXEC message carries argv, environment and settings in one control frame; the
    agent drops a frame over CTL_MAX and the run would fail only after booting, as "the
    VM stopped unexpectedly". The window size is counted at its widest.
    """
    fields: list[tuple[str, str | int]] = [("id", 1)]
    fields += [("arg", a) for a in process.args]
    fields += [("env", e) for e in process.env]
    fields += [("cwd", process.cwd), ("user", process.user), ("tty", 1), ("stdin", 1),
               ("main", 1), ("rows", 65535), ("cols", 65535)]
    try:
        size = len(encode_fields(fields))
    except ValueError:
        raise UsageError("the command, environment, user or working directory contains "
                         "a NUL byte", hint="no process can be given a NUL byte") from None
    if size > CTL_MAX:
        raise UsageError(
            f"the command line and environment take {size} bytes; the guest accepts at "
            f"most {CTL_MAX} bytes",
            hint="pass less through the command, -e/--env-file or the image's Env")


def run(run: RunSpec, store: Store, uri: str, *, pull: Callable[[str], Image],
        terminal: Terminal | None, timeline: boot.Timeline = boot.no_timeline) -> int:
    """Run the container to completion and return its exit status.

    pull fetches an image missing from the store; terminal is the user's, for -t;
    timeline is told of milestones (`hyperrun bench boot`).
    """
    images = ImageStore(store)
    image = resolve_image(store, run, pull)
    cid = names.new_id()
    hostname = run.hostname or cid[:12]
    process = process_spec(image.config, run, hostname)
    check_exec_size(process)
    assets = boot_assets(store, run.kernel)
    accel = accel_mod.resolve(run.accel, once=store.root / "tcg-warned")
    conn = hypervisor.connect(uri)
    warm: pool.Claimed | None = None
    try:
        base = images.base_disk(image)
        share_with_qemu(base, hypervisor.qemu_ids(conn, accel))
        warm = _claim(conn, store, run, image, accel, uri, assets)
        if warm is not None:  # the pooled VM's id is the container's
            cid = warm.vm.id
            hostname = run.hostname or cid[:12]
            process = process_spec(image.config, run, hostname)
        # A container with a restart policy may be booted again as soon as this VM is
        # gone: its sockets are then the new VM's, and no reaper may touch them.
        keep = run.detach or run.restart != "no"
        with pool.given_back_on_error(warm), \
                _Cleanup(store, uri, remove=run.remove, detach=keep) as job:
            entrypoint, cmd = entrypoint_and_cmd(image.config, run)
            settings = state.Settings(
                entrypoint=entrypoint, cmd=cmd, env=process.env, workdir=process.cwd,
                user=process.user, hostname=hostname, tty=run.tty, open_stdin=run.interactive,
                cpus=run.cpus, memory_mib=run.memory_mib, uri=uri, accel=accel.value,
                kernel=str(assets.kernel), initrd=str(assets.initrd), base_disk=str(base),
                log_max_size=run.log_max_size, log_max_files=run.log_max_files,
                restart=run.restart,
                **_capability_settings(run.capabilities),
                **network.settings(run.network, network.allocate(
                    network.published(run.network, image.config.exposed_ports))),
                mounts=tuple(map(mounts.record, volumes.prepare(store, run.mounts))))
            container = job.container = state.create(
                store, cid, run.name, run.image, image.id, run.command, remove=run.remove,
                settings=settings, adopt=warm.dir if warm else None,
                domain_uuid=warm.vm.domain_uuid if warm else None)
            if warm is None:
                create_overlay(base, state.paths(store, container.id).overlay)
            else:
                timeline("warm", None)
            timeline("overlay", None)
            status = _boot_and_run(conn, store, container, process, terminal, job,
                                   detach=run.detach, timeline=timeline, warm=warm)
            if run.detach:
                print(container.id, flush=True)  # as `docker run -d` does
            elif not run.remove:
                state.record_exit(store, container, status)
            else:  # docker's --rm takes the container's anonymous volumes with it
                volumes.remove_anonymous(store, volumes.anonymous_of(container), container.id)
            return status
    finally:
        conn.close()
        if warm is not None:
            # Only now: on a host with few cores a VM booting beside this one's would
            # slow it down (docs/benchmarks.md "Cold and warm start").
            pool.spawn_refill(store)


def _claim(conn: libvirt.virConnect, store: Store, run: RunSpec, image: Image,
           accel: Accel, uri: str, assets: BootAssets) -> pool.Claimed | None:
    """A VM booted ahead for this run (containers/pool.py), if a pool has one that fits."""
    if run.kernel is not None or not pool.servable(run):
        return None
    key = pool.key_of(run, image.id, accel.value, uri)
    return pool.take(conn, store, key, pool.boot_assets_tag(assets.kernel, assets.initrd))


def _boot_and_run(conn: libvirt.virConnect, store: Store, container: state.Container,
                  process: ProcessSpec, terminal: Terminal | None, job: _Cleanup,
                  detach: bool, timeline: boot.Timeline = boot.no_timeline,
                  warm: pool.Claimed | None = None) -> int:
    vm = (boot.booted(conn, store, container, detach=detach, timeline=timeline)
          if warm is None else
          boot.adopted(store, container, warm.dom, warm.vm.monitor_pid, detach, timeline))
    with vm as (c, dom, guest):
        job.started(c)

        def alive() -> bool:
            return hypervisor.is_active(dom)

        if detach:  # started, and left to its monitor
            guest.start(1, process, None, main=True, alive=alive)
            state.record_booted(store, c)
            return 0
        term = terminal if process.tty else None
        size = term.size() if term is not None else None
        with term.raw() if term is not None else contextlib.nullcontext():
            timeline("exec_sent", None)
            timeline("started", guest.start(1, process, size, main=True, alive=alive))
            state.record_booted(store, c)
            status = guest.pump(
                1,
                tty=process.tty,
                stdin_fd=0 if process.stdin else None,
                winsize=term.size if term is not None and term.follows_resizes else None,
                forward=FORWARDED_SIGNALS,
            )
            timeline("exit", None)
            return status


def _capability_settings(caps: frozenset[str] | None) -> dict[str, Any]:
    """--privileged / --cap-add / --cap-drop as docker's inspect shows them."""
    if caps is None:
        return {"privileged": True}
    return {"cap_add": tuple(sorted(caps - capabilities.DEFAULT)),
            "cap_drop": tuple(sorted(capabilities.DEFAULT - caps))}


class _Cleanup:
    """What a run leaves behind, and who removes it.

    Created inside this context, the container's record and files never outlive a failure
    before its VM started; after that a container kept (no --rm) records how it ended.
    On success the sockets (and with --rm the container) go once the domain has gone, in a
    detached reaper, so the user gets the exit status without waiting for libvirt.
    """

    def __init__(self, store: Store, uri: str, remove: bool, detach: bool) -> None:
        self.store = store
        self.uri = uri
        self.remove = remove
        self.detach = detach
        self.container: state.Container | None = None
        self.vm_started = False

    def started(self, c: state.Container) -> None:
        self.vm_started = True
        self.container = c

    def __enter__(self) -> _Cleanup:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        c = self.container
        if c is None:
            return
        files = state.paths(self.store, c.id)
        leftovers = list(files.sockets)
        if self.remove or not self.vm_started:
            leftovers.append(files.dir)
        if exc is None and self.detach:
            return  # its monitor and libvirt carry on
        if exc is None:
            reaper.spawn(self.uri, c.domain_uuid, state.owner(self.store, c), leftovers)
            return
        if self.vm_started and not self.remove:
            status = (exc.status if isinstance(exc, HyperrunError)
                      else 130 if isinstance(exc, KeyboardInterrupt) else EXIT_HYPERRUN)
            message = exc.message if isinstance(exc, HyperrunError) else type(exc).__name__
            state.record_exit(self.store, c, status, message)
        for path in leftovers:
            remove_path(path)
