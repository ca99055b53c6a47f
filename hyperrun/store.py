"""Where hyperrun keeps its state on disk, and the lock that guards it."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hyperrun.errors import HyperrunError, UsageError

DEFAULT_ROOT = "/var/lib/hyperrun"
_STORE_ID_RE = re.compile(r"[0-9a-f]{12}")


@dataclass(frozen=True)
class Store:
    """Layout of the store; every file hyperrun writes lives below `root`.

    blobs/sha256/<hex>   content-addressed layers, configs and manifests
    images.json          image references -> image ids -> manifest digests (images.py)
    disks/<hex>.ext4     read-only base disk of each image (by config digest)
    containers/<id>/     per-container overlay, console log, state
    sock/                virtio-serial channel sockets (short paths: sun_path is 108 bytes)
    boot/                vmlinuz and initrd.img installed by scripts/setup
    pool/                VMs booted ahead of `run` and the pools that want them
    tmp/                 staging; same filesystem as the rest, so renames are atomic
    id                   this store's random identity (domain names and metadata carry it)
    """

    root: Path

    @classmethod
    def default(cls) -> Store:
        root = Path(os.environ.get("HYPERRUN_ROOT", DEFAULT_ROOT)).absolute()
        if root.exists() and not root.is_dir():
            raise UsageError(f"the store {root} is not a directory",
                             hint="point HYPERRUN_ROOT at a directory (or a path not there yet)")
        return cls(root)

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def images_index(self) -> Path:
        return self.root / "images.json"

    @property
    def disks(self) -> Path:
        return self.root / "disks"

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    @property
    def sockets(self) -> Path:
        return self.root / "sock"

    @property
    def pool(self) -> Path:
        """VMs booted ahead for `run` (containers/pool.py): pool.json and vms/<id>/."""
        return self.root / "pool"

    @property
    def boot(self) -> Path:
        return self.root / "boot"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def blob(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or len(hexpart) != 64 or hexpart.strip("0123456789abcdef"):
            raise ValueError(f"unsupported digest {digest!r}")
        return self.blobs / hexpart

    def identity(self) -> str:
        """This store's random id, made on first use: it tells its domains from other stores'.

        One libvirt serves every store on the host, so domain names and metadata carry it.
        """
        path = self.root / "id"
        if not path.exists():
            self.ensure()
            fd, tmp = tempfile.mkstemp(prefix=".id.", dir=self.root)
            try:
                os.write(fd, secrets.token_hex(6).encode() + b"\n")
                os.close(fd)
                os.chmod(tmp, 0o644)
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)  # the first writer wins; everyone reads its id
            finally:
                os.unlink(tmp)
        text = path.read_text().strip()
        if not _STORE_ID_RE.fullmatch(text):
            raise HyperrunError(f"{path} does not hold a store id",
                                hint="restore it from a backup, or remove it when no "
                                     "container of this store is running")
        return text

    def ensure(self) -> None:
        # QEMU runs as an unprivileged user under qemu:///system and must reach the disks
        # and sockets below, so directories are traversable by others (0711); files inside
        # carry their own modes.
        for path in (self.root, self.blobs.parent, self.blobs, self.disks, self.containers,
                     self.sockets, self.boot):
            path.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.tmp.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self, name: str = "store") -> Iterator[None]:
        """Exclusive advisory lock shared by every hyperrun process using this store."""
        self.ensure()
        with open(self.root / f".{name}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def tempdir(self, prefix: str) -> tempfile.TemporaryDirectory[str]:
        """A temporary directory in store.tmp, named for this process (see sweep_owned)."""
        self.ensure()
        sweep_owned(self.tmp, prefix)
        return tempfile.TemporaryDirectory(prefix=owned_prefix(prefix), dir=self.tmp)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write data so that readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def process_alive(pid: int) -> bool:
    """Whether a process that left state in the store still runs (to tell stale from live)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_path(path: Path) -> None:
    """Remove a file, socket or directory tree if it is there; never follows a symlink."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def owned_prefix(prefix: str) -> str:
    """A temporary name prefix that records this process as the owner: `PREFIX<pid>-`."""
    return f"{prefix}{os.getpid()}-"


def sweep_owned(directory: Path, prefix: str) -> None:
    """Remove `PREFIX<pid>-*` entries of directory whose owning process is gone.

    Temporaries are named by owned_prefix, so whatever a killed hyperrun (SIGKILL, OOM)
    left behind is removed by the next command that makes the same kind of temporary.
    """
    try:
        entries = list(directory.glob(f"{glob.escape(prefix)}*-*"))
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(prefix):].partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            remove_path(entry)
