"""`hyperrun run`: from a RunSpec to a finished process, through one transient VM."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import libvirt

from hyperrun.containers import records as state
from hyperrun.errors import BootAssetsMissing, BootFailed, GuestGone, ImageNotFound, UsageError
from hyperrun.images.disk import create_overlay
from hyperrun.images.model import Image, ImageConfig
from hyperrun.images.store import ImageStore
from hyperrun.log import log
from hyperrun.spec import ProcessSpec, PullPolicy, RunSpec, VmSpec, WinSize
from hyperrun.store import Store, remove_path
from hyperrun.subproc import spawn_detached
from hyperrun.vm import accel as accel_mod
from hyperrun.vm import hypervisor
from hyperrun.vm.domain_xml import domain_xml
from hyperrun.vm.session import GuestSession

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
QBOOT = Path("/usr/share/qemu/qboot.rom")
CMDLINE = "console=ttyS0 quiet panic=-1 rdinit=/init"
CONSOLE_TAIL_LINES = 25
CONSOLE_TAIL_BYTES = 64 << 10


class Terminal(Protocol):
    """The user's terminal for a -t container (the CLI implements it)."""

    follows_resizes: bool  # whether size() changes are worth forwarding (SIGWINCH)

    def size(self) -> WinSize | None: ...

    def raw(self) -> AbstractContextManager[None]: ...


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
    return BootAssets(kernel.absolute(), initrd.absolute())


def merge_env(base: tuple[str, ...], overrides: tuple[str, ...]) -> tuple[str, ...]:
    """Later KEY=VALUE entries replace earlier ones with the same key, keeping order."""
    merged: dict[str, str] = {}
    for entry in (*base, *overrides):
        key = entry.partition("=")[0]
        merged.pop(key, None)
        merged[key] = entry
    return tuple(merged.values())


def process_spec(config: ImageConfig, run: RunSpec, hostname: str) -> ProcessSpec:
    """Combine the image config with the command line exactly as docker does."""
    if run.entrypoint is not None:
        # An explicit --entrypoint also drops the image's Cmd; "" clears the entrypoint.
        entrypoint = run.entrypoint
        cmd = run.command
    else:
        entrypoint = tuple(config.entrypoint or ())
        cmd = run.command or tuple(config.cmd or ())
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
    )


def _console_tail(path: Path) -> str:
    # Only the file's end: the guest can write its console without limit.
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - CONSOLE_TAIL_BYTES))
            data = f.read(CONSOLE_TAIL_BYTES)
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-CONSOLE_TAIL_LINES:])


def _boot_timeout() -> float:
    return float(os.environ.get("HYPERRUN_BOOT_TIMEOUT", "90"))


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


def run(run: RunSpec, store: Store, uri: str, *, pull: Callable[[str], Image],
        terminal: Terminal | None) -> int:
    """Run the container to completion and return its exit status.

    pull fetches an image missing from the store; terminal is the user's, for -t.
    """
    images = ImageStore(store)
    image = resolve_image(store, run, pull)
    assets = boot_assets(store, run.kernel)
    accel = accel_mod.resolve(run.accel)
    conn = hypervisor.connect(uri)
    try:
        base = images.base_disk(image)
        container = state.create(store, run.name, run.image, image.id, run.command,
                                 remove=run.remove)
        files = state.paths(store, container.id)
        hostname = run.hostname or container.id[:12]
        process = process_spec(image.config, run, hostname)
        with _cleanup(uri, container.domain, files, remove=run.remove):
            create_overlay(base, files.overlay)
            vm = VmSpec(
                name=container.domain,
                uuid=str(uuid.uuid4()),
                accel=accel,
                vcpus=run.cpus,
                memory_mib=run.memory_mib,
                kernel=assets.kernel,
                initrd=assets.initrd,
                cmdline=CMDLINE,
                overlay=files.overlay,
                base=base,
                ctl_socket=files.ctl_socket,
                io_socket=files.io_socket,
                console_log=files.console_log,
                loader=QBOOT if QBOOT.is_file() else None,
            )
            status = _boot_and_run(conn, vm, process, hostname, terminal)
            if not run.remove:
                state.record_exit(store, container, status)
            return status
    finally:
        conn.close()


def _boot_and_run(conn: libvirt.virConnect, vm: VmSpec, process: ProcessSpec,
                  hostname: str, terminal: Terminal | None) -> int:
    xml = domain_xml(vm)
    log.debug("domain XML:\n%s", xml)
    started = time.monotonic()
    with hypervisor.transient_domain(conn, xml) as dom:
        def alive() -> bool:
            return hypervisor.is_active(dom)

        try:
            with GuestSession.connect(vm.ctl_socket, vm.io_socket) as guest:
                try:
                    guest.setup_container(hostname, _boot_timeout(), alive)
                except (GuestGone, TimeoutError) as exc:
                    why = "did not answer in time" if isinstance(exc, TimeoutError) else "stopped"
                    raise BootFailed(f"the VM failed to boot: the guest agent {why}",
                                     _console_tail(vm.console_log)) from None
                log.debug("guest ready after %.2fs", time.monotonic() - started)
                term = terminal if process.tty else None
                size = term.size() if term is not None else None
                with term.raw() if term is not None else contextlib.nullcontext():
                    guest.start(1, process, size, main=True, alive=alive)
                    return guest.pump(
                        1,
                        tty=process.tty,
                        stdin_fd=0 if process.stdin else None,
                        winsize=term.size if term is not None and term.follows_resizes
                        else None,
                        forward=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                                 signal.SIGUSR1, signal.SIGUSR2),
                    )
        except GuestGone as exc:
            raise BootFailed(f"{exc}", _console_tail(vm.console_log)) from None


@contextlib.contextmanager
def _cleanup(uri: str, domain: str, files: state.Paths, remove: bool) -> Iterator[None]:
    """Remove sockets (and with --rm the container) once its domain has gone.

    On success that wait happens in a detached process, so the user gets the exit
    status without waiting for libvirt's teardown; on failure the domain has already
    been destroyed and we clean up here.
    """
    leftovers = [files.ctl_socket, files.io_socket]
    if remove:
        leftovers.append(files.dir)
    try:
        yield
    except BaseException:
        for path in leftovers:
            remove_path(path)
        raise
    spawn_detached([sys.executable, "-m", "hyperrun.containers.reaper", uri, domain,
                    *map(str, leftovers)])
