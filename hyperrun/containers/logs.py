"""Reading a container's log: the main process's output as its monitor wrote it.

The monitor (monitor/logfile.c) appends one record per line of output to
container.log and rotates by renaming (container.log -> .1 -> .2 ...), keeping at most
max-file files of at most max-size bytes each, as docker's json-file driver does. A
record is binary safe:

    SECONDS.NANOSECONDS STREAM LENGTH\\n DATA \\n

A follower keeps its open file across a rotation and finds the next one by inode, so a
slow reader loses nothing that is still within the bound.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hyperrun.containers.records import Paths

_HEADER = re.compile(rb"(\d{1,12})\.(\d{9}) (stdout|stderr) (\d{1,9})\n")
HEADER_MAX = 48
# The monitor writes at most 64 KiB of data per record; anything else is damage.
DATA_MAX = 1 << 16
READ_CHUNK = 1 << 16
POLL = 0.1


@dataclass(frozen=True)
class Record:
    time_ns: int
    stream: str  # "stdout" or "stderr"
    data: bytes


def log_files(files: Paths) -> list[Path]:
    """The container's log files, oldest first."""
    rotated = sorted((p for p in files.dir.glob(files.log.name + ".*")
                      if p.suffix[1:].isdigit()), key=lambda p: -int(p.suffix[1:]))
    return [*rotated, files.log] if files.log.exists() else rotated


class _Reader:
    """Complete records from one open file; a record still being written waits."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.buf = b""

    def records(self) -> Iterator[Record]:
        while True:
            chunk = self.fh.read(READ_CHUNK)
            if chunk:
                self.buf += chunk
            while True:
                found = _HEADER.match(self.buf[:HEADER_MAX])
                if found is None:
                    if len(self.buf) >= HEADER_MAX or (b"\n" in self.buf[:HEADER_MAX]):
                        self._resync()
                        continue
                    break
                size = int(found[4])
                end = found.end() + size + 1
                if size > DATA_MAX:
                    self._resync()
                    continue
                if len(self.buf) < end:
                    break
                yield Record(int(found[1]) * 10**9 + int(found[2]), found[3].decode(),
                             self.buf[found.end():end - 1])
                self.buf = self.buf[end:]
            if not chunk:
                return

    def _resync(self) -> None:
        """Skip damage (a torn write after a crash): on to the next line."""
        cut = self.buf.find(b"\n", 1)
        self.buf = self.buf[cut + 1:] if cut >= 0 else b""


def read_all(files: Paths) -> Iterator[Record]:
    for path in log_files(files):
        try:
            with path.open("rb") as fh:
                yield from _Reader(fh).records()
        except FileNotFoundError:
            continue  # rotated away while we read the ones before it


def follow(files: Paths, ended: Callable[[], bool]) -> Iterator[Record]:
    """Every record, then new ones as they come, until ended() and all is read."""
    fh: BinaryIO
    for path in log_files(files):
        try:
            fh = path.open("rb")
            break
        except FileNotFoundError:
            continue
    else:
        while not files.log.exists():
            if ended():
                return
            time.sleep(POLL)
        fh = files.log.open("rb")
    reader = _Reader(fh)
    try:
        while True:
            yield from reader.records()
            successor = _successor(files, os.fstat(fh.fileno()).st_ino)
            if successor is not None:
                yield from reader.records()  # what was written before the rotation
                fh.close()
                fh = successor
                reader = _Reader(fh)
                continue
            if fh.tell() > os.fstat(fh.fileno()).st_size:  # max-file=1 truncates in place
                fh.seek(0)
                reader = _Reader(fh)
                continue
            if ended():
                yield from reader.records()
                return
            time.sleep(POLL)
    finally:
        fh.close()


def _successor(files: Paths, inode: int) -> BinaryIO | None:
    """The file written after the one with this inode, once there is one; else None."""
    chain = log_files(files)
    inodes = []
    for path in chain:
        try:
            inodes.append(path.stat().st_ino)
        except FileNotFoundError:
            inodes.append(-1)
    if inodes and inodes[-1] == inode:
        return None  # still the current file
    at = inodes.index(inode) + 1 if inode in inodes else 0  # gone: resume at the oldest
    for path in chain[at:]:
        try:
            return path.open("rb")
        except FileNotFoundError:
            continue
    return None
