"""Container records: what `run` leaves in the store and `ps` / `rm` read back."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hyperrun.errors import ContainerNotFound, UsageError
from hyperrun.store import Store, atomic_write, process_alive


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

    @property
    def domain(self) -> str:
        return f"hyperrun-{self.name}"


@dataclass(frozen=True)
class Paths:
    """Where one container's files live. Sockets sit apart: sun_path is 108 bytes."""

    dir: Path
    ctl_socket: Path
    io_socket: Path

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
                 store.sockets / f"{short}.io")


def _save(store: Store, c: Container) -> None:
    atomic_write(paths(store, c.id).record, json.dumps(asdict(c)).encode())


def all_containers(store: Store) -> Iterator[Container]:
    for record in sorted(store.containers.glob("*/state.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            data = json.loads(record.read_text())
            yield Container(**{**data, "command": tuple(data["command"])})


def create(store: Store, name: str | None, image: str, image_id: str,
           command: tuple[str, ...], remove: bool) -> Container:
    """Reserve an id and a unique name and make the container's directory."""
    cid = secrets.token_hex(32)
    with store.lock("containers"):
        # A --rm container whose `hyperrun run` was killed outright (SIGKILL, OOM) could
        # not clean up; libvirt has already destroyed its VM (AUTODESTROY), so the files
        # are all that is left. The next run removes them.
        for old in all_containers(store):
            if old.remove and old.owner_pid and not process_alive(old.owner_pid):
                remove_files(store, old)
        if name and any(c.name == name for c in all_containers(store)):
            raise UsageError(f"container name {name!r} is already in use",
                             hint="choose another --name or `hyperrun rm` the old container")
        paths(store, cid).dir.mkdir(mode=0o711, parents=True)
        c = Container(cid, name or cid[:12], image, image_id, command, time.time(),
                      remove=remove, owner_pid=os.getpid())
        _save(store, c)
    return c


def record_exit(store: Store, c: Container, status: int) -> None:
    with contextlib.suppress(OSError):
        _save(store, replace(c, exit_status=status))


def find(store: Store, ref: str) -> Container:
    """By name, full id or unique id prefix, as docker resolves container references."""
    found = list(all_containers(store))
    for c in found:
        if ref in (c.name, c.id):
            return c
    matches = [c for c in found if ref and c.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"container reference {ref!r} is ambiguous", hint="give more of the id")
    raise ContainerNotFound(ref)


def remove_files(store: Store, c: Container) -> None:
    p = paths(store, c.id)
    for sock in (p.ctl_socket, p.io_socket):
        sock.unlink(missing_ok=True)
    shutil.rmtree(p.dir, ignore_errors=True)


def users_of_image(store: Store, image_id: str) -> list[str]:
    return [c.name for c in all_containers(store) if c.image_id == image_id]
