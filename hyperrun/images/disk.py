"""Disk images: the read-only ext4 base of an image and the qcow2 overlay of a container."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from hyperrun import subproc
from hyperrun.images.limits import ensure_room
from hyperrun.store import owned_prefix, sweep_owned

GiB = 1 << 30
HEADROOM = 2 * GiB  # room for containers to write, sparse until they do
GROWTH = 1.3  # ext4 metadata, directories and block rounding on top of the files themselves
ALIGN = 4 << 20
BYTES_PER_INODE = 16384  # mke2fs's default inode_ratio
TEMP_PREFIX = ".building-"


def measure(root: Path) -> tuple[int, int]:
    """(bytes allocated, inode count) of a tree, counting hard-linked files once."""
    used = 0
    inodes = 1
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            inodes += 1
            # A long symlink or a file is charged at least its apparent size in 4K blocks.
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
                used += max(st.st_blocks * 512, -(-st.st_size // 4096) * 4096)
    return used, inodes


def base_disk_size(used: int) -> int:
    size = int(used * GROWTH) + HEADROOM
    return -(-size // ALIGN) * ALIGN


def build_base_disk(staging_root: Path, out_path: Path) -> None:
    """Build a read-only (0444) raw ext4 disk of staging_root at out_path, atomically."""
    used, inodes = measure(staging_root)
    size = base_disk_size(used)
    # Enough inodes for the image twice over, never fewer than mke2fs would choose.
    inode_count = max(inodes * 2, size // BYTES_PER_INODE)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The disk file is sparse, but mkfs writes every byte of the files into it.
    ensure_room(out_path.parent, used, out_path.parent.parent)
    # Named for this process, so the next build sweeps what a killed one left behind
    # (callers hold the disks lock, so no live build's file is swept).
    sweep_owned(out_path.parent, TEMP_PREFIX)
    fd, tmp = tempfile.mkstemp(prefix=owned_prefix(TEMP_PREFIX), suffix=".tmp",
                               dir=out_path.parent)
    try:
        os.ftruncate(fd, size)
        os.close(fd)
        fd = -1
        subproc.run([
            "mkfs.ext4", "-q", "-F",
            "-d", str(staging_root),
            "-E", "root_owner=0:0",
            "-L", "rootfs",
            "-O", "^has_journal",  # the base is never written; overlays are throwaway
            "-m", "0",
            "-b", "4096",
            "-N", str(inode_count),
            tmp,
        ])
        os.chmod(tmp, 0o444)
        os.replace(tmp, out_path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def create_overlay(base: Path, overlay: Path) -> None:
    """Create a qcow2 overlay backed by the raw base disk; the backing format is never probed."""
    base = Path(base).absolute()
    subproc.run([
        "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(overlay),
    ])
    # libvirt's dynamic ownership hands the file to the qemu user; keep it readable meanwhile.
    os.chmod(overlay, 0o644)
