"""Downloads in progress in store.tmp: per-blob locks and partial blob files.

A partial blob is named `blob-<pid>-<hex>.XXXX` after the process writing it, so that
whatever a killed pull (SIGKILL, OOM) left behind is swept by the next pull. Lock files
live in tmp/locks, one per blob being downloaded, and are deleted by their holder when it
is done: whoever takes a lock checks that the file it locked is still the one at that
path (a deleted one is retried), the usual way to delete lock files without a race.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hyperrun.store import Store, owned_prefix, sweep_owned

PARTIAL = "blob-"


class Cancelled(Exception):
    """Another layer failed (or Ctrl-C): stop this download."""


def partial_prefix(digest: str) -> str:
    """The name prefix of this process's partial file for digest."""
    return f"{owned_prefix(PARTIAL)}{digest.removeprefix('sha256:')}."


def remove_partials(store: Store, digest: str) -> None:
    """Delete every partial file of digest, whoever made it; the caller holds its lock."""
    for path in store.tmp.glob(f"{PARTIAL}*{digest.removeprefix('sha256:')}.*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def sweep(store: Store) -> None:
    """Remove partial blobs of dead pulls and lock files that nobody holds."""
    sweep_owned(store.tmp, PARTIAL)
    locks = store.tmp / "locks"
    try:
        entries = list(locks.iterdir())
    except OSError:
        return
    for path in entries:
        with contextlib.suppress(OSError):  # best effort: a stray entry is no reason to fail
            fd = _try_lock(path)
            if fd is not None:  # nobody downloads this blob: its lock file is a leftover
                _unlock(path, fd)


@contextlib.contextmanager
def blob_lock(store: Store, digest: str,
              cancel: threading.Event | None = None) -> Iterator[None]:
    """An exclusive lock on one blob, shared by every hyperrun process using the store."""
    locks = store.tmp / "locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    path = locks / digest.removeprefix("sha256:")
    while True:  # poll, so that a cancelled pull stops waiting for another's download
        fd = _try_lock(path)
        if fd is not None:
            break
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        time.sleep(0.1)
    try:
        yield
    finally:
        _unlock(path, fd)


def _try_lock(path: Path) -> int | None:
    """A descriptor holding the lock on the file now at path; None if another holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino,
                                                                          mine.st_dev):
            return fd
        os.close(fd)  # its holder deleted it after we opened it: lock the new one


def _unlock(path: Path, fd: int) -> None:
    # Delete while still holding the lock, so nobody can lock this file and believe it
    # is the current one.
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    finally:
        os.close(fd)
