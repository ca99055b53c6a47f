"""Staging trees: tmpfs when it fits, disk otherwise, nothing left behind either way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hyperrun.images.staging import staging_root, sweep
from hyperrun.store import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def _fstype(path: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_small_image_stages_in_ram_and_leaves_nothing(store: Store) -> None:
    with staging_root(store, 10 << 20) as root:
        assert _fstype(root) == "tmpfs"
        (root / "file").write_text("x")
        assert root.stat().st_mode & 0o777 == 0o755
    assert list(store.tmp.iterdir()) == []
    assert not any(str(store.tmp) in line for line in Path("/proc/mounts").read_text().splitlines())


def test_image_too_big_for_ram_stages_on_disk(store: Store) -> None:
    with staging_root(store, 1 << 50) as root:
        assert _fstype(root) != "tmpfs"
    assert list(store.tmp.iterdir()) == []


def test_staging_disk_can_be_forced(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERRUN_STAGING", "disk")
    with staging_root(store, 1 << 20) as root:
        assert _fstype(root) != "tmpfs"


def test_left_behind_by_a_killed_process_is_swept(store: Store) -> None:
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from hyperrun.images.staging import staging_root\n"
        "from hyperrun.store import Store\n"
        "with staging_root(Store(Path(sys.argv[1])), 1 << 20) as root:\n"
        "    print(root, flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(store.root)], capture_output=True,
                          text=True)
    assert proc.returncode == -9
    left = Path(proc.stdout.strip()).parent
    assert left.exists() and os.path.ismount(left)
    sweep(store)
    assert not left.exists()
    assert not any(str(left) in line for line in Path("/proc/mounts").read_text().splitlines())
