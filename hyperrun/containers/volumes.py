"""Named volumes in the store, and what a container's mounts become at boot.

A volume is `STORE/volumes/<name>/_data` (docker's layout) plus a small `volume.json`.
The directory is root's alone (0700): the VM reaches it only through its file server
(virtiofsd, which libvirt runs as root). At boot every bind mount and volume becomes a
`Share` of the VM (one device, tag `hrN`) and a `mount` record of CONTAINER; a read-only
one is exported from a read-only bind mount of its source, so the host refuses writes
whatever the guest's kernel does (docs/volumes.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hyperrun import subproc
from hyperrun.containers import mounts as mounts_mod
from hyperrun.containers import records
from hyperrun.errors import EXIT_FAILURE, HyperrunError, UsageError
from hyperrun.log import log
from hyperrun.spec import Mount, MountType, Share
from hyperrun.store import Store, atomic_write, owned_prefix, process_alive

# The file server of every share: virtio-fs (measured, docs/benchmarks.md "Volumes").
# HYPERRUN_VOLUME_DRIVER=9p switches to QEMU's 9p server, for that benchmark only.
DRIVERS = ("virtiofs", "9p")
VIEW_PREFIX = "rovol-"


class VolumeNotFound(HyperrunError):
    status = EXIT_FAILURE  # as docker's

    def __init__(self, name: str) -> None:
        super().__init__(f"no such volume: {name[:200]}", hint="see `hyperrun volume ls`")


class VolumeInUse(HyperrunError):
    def __init__(self, name: str, users: list[str]) -> None:
        super().__init__(f"remove {name}: volume is in use - [{', '.join(users)}]",
                         hint="remove those containers first (`hyperrun rm`)")


@dataclass(frozen=True)
class Volume:
    name: str
    created: float
    anonymous: bool
    path: Path  # the volume's directory; its content is path / "_data"

    @property
    def data(self) -> Path:
        return self.path / "_data"


def root(store: Store) -> Path:
    return store.root / "volumes"


def _dir(store: Store, name: str) -> Path:
    return root(store) / name


def _load(store: Store, name: str) -> Volume:
    path = _dir(store, name)
    try:
        meta = json.loads((path / "volume.json").read_text())
    except (OSError, ValueError):
        if not (path / "_data").is_dir():
            raise VolumeNotFound(name) from None
        meta = {}  # a volume whose metadata was lost still exists
    return Volume(name, float(meta.get("created", 0)), bool(meta.get("anonymous")), path)


def get(store: Store, name: str) -> Volume:
    if not mounts_mod.VOLUME_NAME_RE.fullmatch(name):
        raise VolumeNotFound(name)
    return _load(store, name)


def all_volumes(store: Store) -> list[Volume]:
    try:
        names = sorted(p.name for p in root(store).iterdir())
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if mounts_mod.VOLUME_NAME_RE.fullmatch(name):
            with contextlib.suppress(VolumeNotFound):
                out.append(_load(store, name))
    return out


def create(store: Store, name: str | None = None, anonymous: bool = False) -> Volume:
    """Create a volume (a generated name without one); an existing one is returned."""
    if name is not None and not mounts_mod.VOLUME_NAME_RE.fullmatch(name):
        raise UsageError(f"invalid volume name {name[:200]!r}", hint=mounts_mod.VOLUME_NAME_HINT)
    name = name or secrets.token_hex(32)
    with store.lock("volumes"):
        root(store).mkdir(mode=0o700, parents=True, exist_ok=True)
        path = _dir(store, name)
        if (path / "_data").is_dir():
            return _load(store, name)
        path.mkdir(mode=0o700, exist_ok=True)
        (path / "_data").mkdir(mode=0o755, exist_ok=True)
        atomic_write(path / "volume.json", json.dumps(
            {"created": time.time(), "anonymous": anonymous}).encode(), mode=0o600)
    return _load(store, name)


def users(store: Store, ignore: str = "") -> dict[str, list[str]]:
    """Volume name -> the containers (ids) whose records mount it, running or not."""
    out: dict[str, list[str]] = {}
    for c in records.all_containers(store):
        if c.id == ignore:
            continue
        for m in mounts_mod.of_records(c.settings.mounts):
            if m.type is MountType.VOLUME:
                out.setdefault(m.source, []).append(c.id[:12])
    return out


def _remove_tree(v: Volume) -> None:
    shutil.rmtree(v.path, ignore_errors=True)  # as root: modes the guest set do not stop it


def remove(store: Store, name: str) -> None:
    """`volume rm`: refused while any container (running or stopped) mounts it."""
    with store.lock("volumes"):
        v = get(store, name)
        in_use = users(store).get(name)
        if in_use:
            raise VolumeInUse(name, in_use)
        _remove_tree(v)


def anonymous_of(c: records.Container) -> list[str]:
    return [m.source for m in mounts_mod.of_records(c.settings.mounts) if m.anonymous]


def remove_anonymous(store: Store, names: Iterable[str], removed: str = "") -> None:
    """`rm -v`, `run --rm`: the anonymous volumes of a container that is removed (or being
    removed: its record is then ignored), unless another container uses them."""
    with store.lock("volumes"):
        in_use = users(store, ignore=removed)
        for name in names:
            with contextlib.suppress(VolumeNotFound):
                v = get(store, name)
                if v.anonymous and name not in in_use:
                    _remove_tree(v)


def size(v: Volume) -> int:
    total = 0
    for dirpath, _, files in os.walk(v.path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def prune(store: Store, everything: bool) -> tuple[list[str], int]:
    """Remove unused volumes (anonymous ones only unless everything), as docker does."""
    removed, reclaimed = [], 0
    with store.lock("volumes"):
        in_use = users(store)
        for v in all_volumes(store):
            if v.name in in_use or not (everything or v.anonymous):
                continue
            reclaimed += size(v)
            _remove_tree(v)
            removed.append(v.name)
    return removed, reclaimed


def prepare(store: Store, mounts: Iterable[Mount]) -> tuple[Mount, ...]:
    """Before a container is created: bind sources exist, every volume has a name and exists."""
    out = []
    mounts = tuple(mounts)
    mounts_mod.check_bind_sources(mounts)
    for m in mounts:
        if m.type is MountType.VOLUME:
            m = replace(m, source=create(store, m.source or None, m.anonymous).name)
        out.append(m)
    return tuple(out)


def driver() -> str:
    value = os.environ.get("HYPERRUN_VOLUME_DRIVER", "virtiofs")
    return value if value in DRIVERS else "virtiofs"


def _view(store: Store, cid: str, index: int) -> Path:
    return store.tmp / f"{owned_prefix(VIEW_PREFIX)}{cid[:12]}-{index}"


def _source(store: Store, m: Mount) -> Path:
    return Path(m.source) if m.type is MountType.BIND else _dir(store, m.source) / "_data"


def shares(store: Store, cid: str, mounts: Iterable[Mount]) -> tuple[Share, ...]:
    """The VM's shares for the container's mounts, in mount order (tags hr0, hr1, ...).

    virtiofsd has no read-only mode, so a read-only share is exported from a read-only
    bind mount (HostShares); QEMU's 9p server has one of its own.
    """
    kind = driver()
    out = []
    for i, m in enumerate(m for m in mounts if m.type is not MountType.TMPFS):
        source = _view(store, cid, i) if m.readonly and kind == "virtiofs" else _source(store, m)
        out.append(Share(f"hr{i}", source, kind, m.readonly))
    return tuple(out)


def guest_fields(store: Store, mounts: Iterable[Mount]) -> list[tuple[str, str | int]]:
    """CONTAINER's `mount` records (docs/protocol.md "The container's mounts")."""
    kind = driver()
    fields: list[tuple[str, str | int]] = []
    index = 0
    for m in mounts:
        if m.type is MountType.TMPFS:
            options = f"size={m.tmpfs_size},mode={m.tmpfs_mode:04o}" if m.tmpfs_size else \
                f"mode={m.tmpfs_mode:04o}"
            fields.append(("mount", f"tmpfs - {'ro' if m.readonly else 'rw'} {options} "
                                    f"{m.target}"))
            continue
        mode = "ro" if m.readonly else "rw"
        if m.type is MountType.VOLUME and not m.readonly and not m.nocopy and _empty(
                _source(store, m)):
            mode = "copy"  # docker fills an empty volume with the image's content
        fields.append(("mount", f"{kind} hr{index} {mode} - {m.target}"))
        index += 1
    return fields


def _empty(path: Path) -> bool:
    try:
        return not any(path.iterdir())
    except OSError:
        return False


class HostShares:
    """The host's side of a boot's shares, for as long as libvirt starts the VM.

    Bind sources are checked again (a missing one is created, as docker does at every
    start). Read-only shares get read-only bind mounts of their sources ("views"):
    virtiofsd copies them into its own mount namespace at start, so they are detached
    from the host's right after (`release`), and a killed command's are swept by the
    next one's.
    """

    def __init__(self, store: Store, cid: str, mounts: Iterable[Mount]) -> None:
        self.store = store
        shared = [m for m in mounts if m.type is not MountType.TMPFS]
        self.binds = [m for m in shared if m.type is MountType.BIND]
        self.pairs = [(_source(store, m), share.source) for m, share in zip(
            shared, shares(store, cid, shared), strict=True)
            if share.readonly and share.driver == "virtiofs"]

    def __enter__(self) -> HostShares:
        mounts_mod.check_bind_sources(self.binds)
        if self.pairs:
            _sweep(self.store)
        try:
            for source, view in self.pairs:
                _detach(view)  # one an earlier boot in this process could not remove
                view.mkdir(mode=0o700)
                # Not --rbind: a read-only remount covers only the top mount.
                subproc.run(["mount", "--bind", "--", str(source), str(view)])
                subproc.run(["mount", "--make-private", "--", str(view)])
                subproc.run(["mount", "-o", "remount,bind,ro", "--", str(view)])
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        for _, view in self.pairs:
            _detach(view)
        self.pairs = []

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _detach(view: Path) -> None:
    if not view.exists():
        return
    # Not os.path.ismount: a bind mount from the same file system does not look like one.
    try:
        subproc.run(["umount", "--lazy", "--", str(view)])
    except HyperrunError as e:
        log.debug("umount %s: %s", view, e.message)  # not mounted (any more)
    with contextlib.suppress(OSError):
        view.rmdir()


def _sweep(store: Store) -> None:
    """Detach the views a killed command left (named for their owner process)."""
    for view in store.tmp.glob(f"{VIEW_PREFIX}*-*"):
        pid = view.name[len(VIEW_PREFIX):].partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            _detach(view)
