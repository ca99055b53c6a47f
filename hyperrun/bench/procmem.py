"""What host processes cost in memory, read from /proc: RSS, PSS, and QEMU's split of its
RSS into guest RAM and TCG's code buffer; the host's MemAvailable and load."""

from __future__ import annotations

from pathlib import Path

MIB = 1 << 20


def kib_fields(text: str) -> dict[str, int]:
    """The `Key: N kB` lines of a /proc file (status, smaps_rollup, meminfo), in bytes."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields = value.split()
        if len(fields) == 2 and fields[1] == "kB" and fields[0].isdigit():
            out[key] = int(fields[0]) * 1024
    return out


def status(pid: int) -> dict[str, int]:
    """The memory lines of /proc/PID/status in bytes (VmRSS, RssAnon, RssFile, ...)."""
    return kib_fields(Path(f"/proc/{pid}/status").read_text())


def pss(pid: int) -> int:
    """Proportional set size: RSS with shared pages (binaries, libraries) split among the
    processes mapping them: what one more such process costs."""
    return kib_fields(Path(f"/proc/{pid}/smaps_rollup").read_text())["Pss"]


def qemu_split(pid: int, guest_bytes: int) -> tuple[int | None, int | None]:
    """Resident bytes of QEMU's guest RAM (the anonymous or memfd mapping of the guest's
    size) and of TCG's code buffer (its anonymous executable mappings), from smaps."""
    ram: int | None = None
    code: int | None = None
    kind = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            lo, _, hi = fields[0].partition("-")
            anonymous = len(fields) == 5
            # Guest RAM in a memfd maps as "/memfd:pc.ram (deleted)".
            memfd = len(fields) > 5 and fields[5].startswith("/memfd:")
            kind = ("ram" if (anonymous or memfd) and int(hi, 16) - int(lo, 16) == guest_bytes
                    else "code" if anonymous and "x" in fields[1] else "")
        elif fields and fields[0] == "Rss:" and kind:
            rss = int(fields[1]) * 1024
            if kind == "ram":
                ram = (ram or 0) + rss
            else:
                code = (code or 0) + rss
    return ram, code


def host_available() -> int:
    return kib_fields(Path("/proc/meminfo").read_text())["MemAvailable"]


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def allocated(path: Path) -> int:
    """Bytes a file or directory tree takes on disk (allocated blocks, not apparent size)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_blocks * 512
    total = path.lstat().st_blocks * 512
    for entry in path.rglob("*"):
        try:
            total += entry.lstat().st_blocks * 512
        except OSError:
            continue  # a socket or file that went away meanwhile
    return total
