"""Versions of what runs a VM: libvirt's and QEMU's numbers, the guest kernel's header."""

from __future__ import annotations

from pathlib import Path

from hyperrun import log

KERNEL_HEADER = 0x200  # the x86 boot protocol's setup header sits in the image's 2nd sector


def libvirt_version(number: int) -> str:
    """libvirt's encoding of versions (major * 1,000,000 + minor * 1,000 + release)."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def kernel_version(path: Path) -> str:
    """The version string a bzImage carries in its boot header, or "" if it has none."""
    try:
        with path.open("rb") as f:
            head = f.read(64 << 10)
    except OSError:
        return ""
    if head[0x202:0x206] != b"HdrS" or len(head) < 0x210:
        return ""
    offset = int.from_bytes(head[0x20E:0x210], "little") + KERNEL_HEADER
    text = head[offset:offset + 256].split(b"\0")[0]
    return log.escape(text.decode(errors="replace"))
