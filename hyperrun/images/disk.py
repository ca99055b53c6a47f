"""Disk images: the read-only ext4 base of an image and the qcow2 overlay of a container."""

from __future__ import annotations

import contextlib
import grp
import os
import re
import stat
import tempfile
from pathlib import Path

from hyperrun import subproc
from hyperrun.errors import HyperrunError
from hyperrun.images.limits import ensure_room
from hyperrun.store import owned_prefix, sweep_owned

GiB = 1 << 30
HEADROOM = 2 * GiB  # room for containers to write, sparse until they do
GROWTH = 1.3  # ext4 metadata, directories and block rounding on top of the files themselves
ALIGN = 4 << 20
BYTES_PER_INODE = 16384  # mke2fs's default inode_ratio
TEMP_PREFIX = ".building-"

# Container data is root's and QEMU's alone. A base disk is read by the QEMU of every
# container of its image: 0440 to QEMU's group, so no relabelling is needed. An overlay is
# 0600 root: libvirt's dynamic ownership lends it to QEMU's user while the VM runs and
# gives it back to root afterwards.
BASE_MODE = 0o440
OVERLAY_MODE = 0o600
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
DEFAULT_QEMU_GROUP = "libvirt-qemu"  # Debian's libvirt runs QEMU as libvirt-qemu:libvirt-qemu


def qemu_group(conf: Path = QEMU_CONF) -> int:
    """QEMU's group under qemu:///system as qemu.conf sets it (a best guess without libvirt;
    `run` corrects the disk from libvirt's own answer, see share_with_qemu)."""
    name = DEFAULT_QEMU_GROUP
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in conf.read_text().splitlines():
            found = re.fullmatch(r'\s*group\s*=\s*"([^"]+)"\s*', line)
            if found:
                name = found[1]
    if name.startswith("+") and name[1:].isdigit():
        return int(name[1:])
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return 0


def share_with_qemu(base: Path, ids: tuple[int, int] | None) -> None:
    """Make a base disk readable by QEMU's group (ids from libvirt) and nobody else.

    Also brings disks built before this rule, or for another QEMU group, in line.
    """
    if ids is None:
        return
    try:
        st = os.stat(base)
        if st.st_gid != ids[1] or st.st_uid != 0:
            os.chown(base, 0, ids[1])
        if stat.S_IMODE(st.st_mode) != BASE_MODE:
            os.chmod(base, BASE_MODE)
    except OSError as exc:
        raise HyperrunError(f"cannot give QEMU access to {base}: {exc.strerror}",
                            hint="hyperrun must run as root on a writable store") from None


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
    """Build a read-only raw ext4 disk (BASE_MODE, QEMU's group) of staging_root at out_path."""
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
        os.chown(tmp, 0, qemu_group())
        os.chmod(tmp, BASE_MODE)
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
    # qemu-img ran with umask 077 (subproc); say the mode outright all the same.
    os.chmod(overlay, OVERLAY_MODE)
