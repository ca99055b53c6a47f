"""Container records: what `run` leaves in the store and `ps` / `rm` read back."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hyperrun import log
from hyperrun.containers import names
from hyperrun.errors import ContainerNotFound, UsageError
from hyperrun.spec import DomainOwner
from hyperrun.store import Store, atomic_write, process_alive, remove_path
from hyperrun.vm import monitor

# docker's rule for container names, with a bound so libvirt and terminals stay sane.
RECORD_MODE = 0o600  # the command line may carry secrets
EXIT_FILE_MAX = 4096  # the monitor writes a status and at most 512 bytes of message


@dataclass(frozen=True)
class Settings:
    """What the container was started with, fixed for its life (`inspect` shows it).

    A record written before a field existed loads with its default ((), "", 0, False).
    The environment is kept too, as docker keeps it: records are root's alone (0600).
    """

    entrypoint: tuple[str, ...] = ()  # as the process got them: image config + command line
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    tty: bool = False
    open_stdin: bool = False
    cpus: int = 0
    memory_mib: int = 0
    uri: str = ""  # the libvirt connection its VM ran under
    accel: str = ""
    kernel: str = ""
    initrd: str = ""
    base_disk: str = ""
    privileged: bool = False
    cap_add: tuple[str, ...] = ()  # relative to docker's default set, as docker shows them
    cap_drop: tuple[str, ...] = ()
    log_max_size: int = 10 << 20  # --log-opt max-size, max-file (docker's json-file)
    log_max_files: int = 3
    restart: str = "no"  # --restart: no, always, unless-stopped, on-failure[:N]
    network: str = ""  # --network: user or none ("": a record from before networks, none)
    ports: tuple[str, ...] = ()  # published ports as network.port_record writes them
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()  # --add-host, as docker's ExtraHosts: NAME:IP
    mounts: tuple[str, ...] = ()  # -v, --mount, --tmpfs as mounts.record writes them

    @property
    def args(self) -> tuple[str, ...]:
        return (*self.entrypoint, *self.cmd)


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    image: str  # the reference as the user gave it
    image_id: str
    command: tuple[str, ...]
    created: float
    exit_status: int | None = None
    remove: bool = False  # --rm: nothing of it may outlive the run
    owner_pid: int = 0  # the `hyperrun run` process that created it
    domain: str = ""  # libvirt domain name, for people; hyperrun goes by domain_uuid
    domain_uuid: str = ""
    error: str = ""  # why it ended, when hyperrun rather than its process decided
    started: float = 0.0  # when its VM was started; 0 if it never was (or not recorded)
    finished: float = 0.0  # when its end was recorded
    monitor_pid: int = 0  # its hyperrun-monitor while its VM runs (vm/monitor.py)
    detached: bool = False  # its VM outlives the command that booted it (run -d, start)
    paused: bool = False  # `hyperrun pause` froze it (libvirt has the final word: ps asks)
    restart_count: int = 0  # times its restart policy started it again
    manually_stopped: bool = False  # `stop` or `kill`: its restart policy leaves it down
    booted: bool = False  # its main process was started in this boot of its VM
    settings: Settings = Settings()

    @property
    def args(self) -> tuple[str, ...]:
        """The process's argv; records older than Settings only have the command line."""
        return self.settings.args or self.command


@dataclass(frozen=True)
class Paths:
    """Where one container's files live. Sockets sit apart: sun_path is 108 bytes."""

    dir: Path
    ctl_socket: Path
    io_socket: Path
    mon_socket: Path  # where commands reach the container's monitor

    @property
    def sockets(self) -> tuple[Path, Path, Path]:
        return self.ctl_socket, self.io_socket, self.mon_socket

    @property
    def exit_file(self) -> Path:
        """The main process's exit status, written by the monitor (vm/monitor.py)."""
        return self.dir / "exit"

    @property
    def log(self) -> Path:
        """The main process's output; rotated copies are container.log.1, .2, ..."""
        return self.dir / "container.log"

    @property
    def monitor_log(self) -> Path:
        return self.dir / "monitor.log"

    @property
    def overlay(self) -> Path:
        return self.dir / "overlay.qcow2"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def record(self) -> Path:
        return self.dir / "state.json"


def paths(store: Store, container_id: str) -> Paths:
    short = container_id[:12]
    return Paths(store.containers / container_id, store.sockets / f"{short}.ctl",
                 store.sockets / f"{short}.io", store.sockets / f"{short}.mon")


def owner(store: Store, c: Container) -> DomainOwner:
    return DomainOwner(store.identity(), c.id)


def domain_name(store: Store, cid: str) -> str:
    """The libvirt name of container cid's VM (for people: hyperrun goes by its UUID)."""
    return f"hyperrun-{store.identity()}-{cid[:12]}"


_FIELDS = {f.name for f in dataclasses.fields(Container)}
_SETTINGS = {f.name for f in dataclasses.fields(Settings)}


def _load(record: Path) -> Container:
    data = json.loads(record.read_text())
    known = {k: v for k, v in data.items() if k in _FIELDS}  # records of other versions
    settings: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                for k, v in (data.get("settings") or {}).items()
                                if k in _SETTINGS}
    known["settings"] = Settings(**settings)
    return Container(**{**known, "command": tuple(data["command"])})


def all_containers(store: Store) -> Iterator[Container]:
    """Every container with a readable record; an unreadable one is reported, not hidden."""
    for record in sorted(store.containers.glob("*/state.json")):
        try:
            c = _load(record)
        except FileNotFoundError:
            continue  # removed while we looked
        except (OSError, ValueError, TypeError, KeyError) as exc:
            _report_unreadable(record, exc)
            continue
        yield c


_reported: set[Path] = set()


def _report_unreadable(record: Path, exc: BaseException) -> None:
    if record in _reported:  # once per command, however often the records are read
        return
    _reported.add(record)
    reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    log.warning(f"container {record.parent.name[:12]} is left out: its record {record} "
                f"cannot be read ({reason}); once it no longer runs, remove {record.parent}")


def _current(store: Store, c: Container) -> Container | None:
    """c as its record says now (another command may have renamed it), None if removed."""
    try:
        return _load(paths(store, c.id).record)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _save(store: Store, c: Container) -> None:
    atomic_write(paths(store, c.id).record, json.dumps(asdict(c)).encode(), mode=RECORD_MODE)


def sweep(store: Store) -> None:
    with store.lock("containers"):
        _sweep(store)


def _sweep(store: Store) -> None:
    """Remove what runs that were killed outright (SIGKILL, OOM) could not.

    A container whose `hyperrun run` and monitor are both gone has no VM any more
    (AUTODESTROY ended a foreground one; a detached one's monitor lives as long as its
    VM), so its sockets are garbage, and so is all of a --rm container. Called with the
    containers lock held.
    """
    live: set[str] = set()
    for old in all_containers(store):
        owner_gone = old.owner_pid and not process_alive(old.owner_pid) and not \
            monitor.alive(old.monitor_pid, paths(store, old.id).mon_socket)
        if owner_gone and old.remove:
            _remove_files(store, old)
            continue
        if owner_gone or old.exit_status is not None:
            continue  # its sockets, if any, are swept below
        live.add(old.id[:12])
    with contextlib.suppress(OSError):  # a pooled VM's, until containers/pool.py sweeps it
        live.update(vm.name[:12] for vm in (store.pool / "vms").iterdir())
    with contextlib.suppress(OSError):
        for sock in store.sockets.iterdir():
            if sock.stem not in live:
                remove_path(sock)


def create(store: Store, cid: str, name: str | None, image: str, image_id: str,
           command: tuple[str, ...], remove: bool,
           settings: Settings | None = None, adopt: Path | None = None,
           domain_uuid: str | None = None) -> Container:
    """Reserve a unique name (a generated one without --name), make the directory and record.

    adopt: the directory of a VM booted ahead (containers/pool.py), moved in as the
    container's, whose domain has domain_uuid.
    """
    if name is not None:
        names.validate_name(name)
    domain = domain_name(store, cid)
    with store.lock("containers"):
        _sweep(store)
        taken = {c.name for c in all_containers(store)}
        if name and name in taken:
            raise UsageError(f"container name {name!r} is already in use",
                             hint="choose another --name or `hyperrun rm` the old container")
        if adopt is not None:
            os.rename(adopt, paths(store, cid).dir)
        else:
            # 0711: QEMU must reach the overlay by its path, but nobody may list it.
            paths(store, cid).dir.mkdir(mode=0o711, parents=True)
        c = Container(cid, name or names.generate(taken), image, image_id, command,
                      time.time(), remove=remove, owner_pid=os.getpid(), domain=domain,
                      domain_uuid=domain_uuid or str(uuid.uuid4()),
                      settings=settings or Settings())
        _save(store, c)
    return c


def _update(store: Store, c: Container, only_if_running: bool = False,
            **changes: Any) -> Container:
    """Apply changes to c's current record (never to a stale copy), if it still exists."""
    with store.lock("containers"):
        current = _current(store, c)
        if current is None:  # removed meanwhile (`rm -f` of a live one)
            return replace(c, **changes)
        if only_if_running and current.exit_status is not None:
            return current
        done = replace(current, **changes)
        with contextlib.suppress(OSError):
            _save(store, done)
    return done


def record_start(store: Store, c: Container, **changes: Any) -> Container:
    return _update(store, c, started=time.time(), **changes)


@contextlib.contextmanager
def locked(store: Store, c: Container) -> Iterator[None]:
    """Serialise the commands that change one container's life (start, stop, kill, rm).

    The lock file lives in the container's directory, so a command that waited on it
    while `rm` removed the container finds the container gone, not a fresh lock.
    """
    try:
        fd = os.open(paths(store, c.id).dir / "lock",
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError:
        raise ContainerNotFound(c.name) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def record_paused(store: Store, c: Container, paused: bool) -> Container:
    return _update(store, c, paused=paused)


def restarting(store: Store, c: Container, automatic: bool = False) -> Container:
    """c, about to boot again: its last end forgotten, this command its owner.

    automatic: by its restart policy (counted), not by `start` (which resets the count).
    """
    return _update(store, c, exit_status=None, error="", finished=0.0, started=0.0,
                   owner_pid=os.getpid(), monitor_pid=0, paused=False,
                   manually_stopped=False, booted=False,
                   restart_count=c.restart_count + 1 if automatic else 0)


def record_booted(store: Store, c: Container) -> Container:
    return _update(store, c, booted=True)


def record_manual_stop(store: Store, c: Container) -> Container:
    return _update(store, c, manually_stopped=True)


def record_exit(store: Store, c: Container, status: int, error: str = "") -> Container:
    """Record how c ended, unless it has been removed meanwhile (`rm -f` of a live one)."""
    return _update(store, c, exit_status=status, error=error, finished=time.time())


def record_lost(store: Store, c: Container, status: int, error: str) -> Container:
    """Record that c ended unseen, unless its owner recorded how it ended meanwhile.

    A reader that found no status, no VM and no owner may have raced with an owner that
    wrote the status and exited in between: the status the owner wrote wins.
    """
    return _update(store, c, only_if_running=True, exit_status=status, error=error,
                   finished=time.time())


def read_exit(files: Paths) -> tuple[int, str] | None:
    """The status and message in the exit file the monitor wrote, if it has written one."""
    try:
        with files.exit_file.open("rb") as f:
            data = f.read(EXIT_FILE_MAX)
    except OSError:
        return None
    status, _, message = data.decode(errors="replace").partition("\n")
    if not status.isdigit() or int(status) > 255:
        return None
    return int(status), message.strip()


def rename(store: Store, ref: str, new: str) -> Container:
    """Give a container a new name, as `docker rename` does; its VM keeps its domain name."""
    names.validate_name(new)
    with store.lock("containers"):
        c = find(store, ref)
        if new == c.name:
            raise UsageError(f"container {c.name} is already named {new!r}",
                             hint="give a different new name")
        if any(other.name == new for other in all_containers(store)):
            raise UsageError(f"container name {new!r} is already in use",
                             hint="choose another name or `hyperrun rm` the old container")
        renamed = replace(c, name=new)
        _save(store, renamed)
    return renamed


def find(store: Store, ref: str) -> Container:
    """By full id, then name, then unique id prefix: docker's order of resolution."""
    found = list(all_containers(store))
    for matches in ([c for c in found if c.id == ref], [c for c in found if c.name == ref]):
        if matches:
            return matches[0]
    matches = [c for c in found if ref and c.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"container reference {ref!r} is ambiguous", hint="give more of the id")
    raise ContainerNotFound(ref)


def _remove_files(store: Store, c: Container) -> None:
    p = paths(store, c.id)
    for sock in p.sockets:
        sock.unlink(missing_ok=True)
    shutil.rmtree(p.dir, ignore_errors=True)


def remove_files(store: Store, c: Container) -> None:
    with store.lock("containers"):
        _remove_files(store, c)


def remove_sockets(store: Store, c: Container) -> None:
    for sock in paths(store, c.id).sockets:
        sock.unlink(missing_ok=True)


def users_of_image(store: Store, image_id: str) -> list[str]:
    return [c.name for c in all_containers(store) if c.image_id == image_id]
