"""Per-blob locks and partial files of downloads (hyperrun/registry/downloads.py), and the
pull progress output (hyperrun/cli/progress.py) fed with hostile text."""

from __future__ import annotations

import io
import os
import threading
import time

from hyperrun.cli.progress import Mode, PullProgress
from hyperrun.registry import downloads
from hyperrun.store import Store

DIGEST = "sha256:" + "ab" * 32


def test_blob_lock_excludes_while_its_files_come_and_go(store: Store) -> None:
    """Holders delete the lock file on release; nobody may ever hold a deleted one."""
    inside: list[int] = []
    overlaps: list[int] = []

    def worker(n: int) -> None:
        for _ in range(40):
            with downloads.blob_lock(store, DIGEST):
                inside.append(n)
                if len(inside) > 1:
                    overlaps.append(n)
                time.sleep(0.0005)
                inside.remove(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert overlaps == []
    assert list((store.tmp / "locks").iterdir()) == []


def test_sweep_keeps_what_live_pulls_use(store: Store) -> None:
    with downloads.blob_lock(store, DIGEST):
        mine = store.tmp / (downloads.partial_prefix(DIGEST) + "x")
        mine.write_bytes(b"partial")
        dead = store.tmp / f"blob-{2 ** 22 + 17}-{'cd' * 32}.y"  # beyond pid_max: no owner
        dead.write_bytes(b"partial")
        downloads.sweep(store)
        assert mine.exists() and not dead.exists()
        assert (store.tmp / "locks" / DIGEST[7:]).exists()  # held: kept
    (store.tmp / "locks" / "ef").touch()  # left by a killed pull: nobody holds it
    downloads.sweep(store)
    assert list((store.tmp / "locks").iterdir()) == []
    os.unlink(mine)


def test_progress_escapes_what_it_prints() -> None:
    out = io.StringIO()
    with PullProgress(out, Mode.PLAIN) as progress:
        progress.message("v1: Pulling from \x1b[2Jevil\rfake")
        progress.layer(DIGEST, "Waiting\x1b]0;title\x07")
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert "\\x1b[2Jevil\\x0dfake" in out.getvalue()
