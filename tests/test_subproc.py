"""Helper processes run as root: nothing of the caller's (PATH, cwd, environment) may
choose what they run. No VM needed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from hyperrun import subproc
from hyperrun.bench import boot
from hyperrun.containers import reaper
from hyperrun.spec import DomainOwner
from hyperrun.store import Store


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A directory of look-alike tools and modules, first on PATH and PYTHONPATH and the cwd."""
    evil, marker = tmp_path / "evil", tmp_path / "planted-code-ran"
    payload = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    (evil / "hyperrun").mkdir(parents=True)
    (evil / "hyperrun" / "__init__.py").write_text(payload)
    (evil / "libvirt.py").write_text(payload)
    (evil / "sitecustomize.py").write_text(payload)
    for tool in ("qemu-img", "env", "sh", "python3"):
        (evil / tool).write_text(f"#!/bin/sh\necho \"$0\" >> {marker}\n")
        (evil / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{evil}:/usr/bin:/bin")
    monkeypatch.setenv("PYTHONPATH", str(evil))
    monkeypatch.setenv("MKE2FS_CONFIG", str(evil / "mke2fs.conf"))
    monkeypatch.chdir(evil)
    return evil, marker


def test_tools_come_from_the_trusted_path(planted: tuple[Path, Path]) -> None:
    evil, marker = planted
    assert not subproc.resolve("qemu-img").startswith(str(evil))
    out = subproc.run(["env"]).stdout.decode().splitlines()
    assert sorted(out) == sorted(f"{k}={v}" for k, v in subproc.environment().items())
    assert not marker.exists()


def test_missing_tool_is_one_clear_error() -> None:
    with pytest.raises(subproc.HyperrunError, match="not found"):
        subproc.run(["no-such-tool-here"])


def test_detached_children_start_in_root_with_the_minimal_environment(
        planted: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "where"
    subproc.spawn_detached(["sh", "-c", f"pwd > {out}.tmp; env >> {out}.tmp; mv {out}.tmp {out}"])
    deadline = time.monotonic() + 10
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = out.read_text().splitlines()
    assert lines[0] == "/"
    assert "PYTHONPATH" not in out.read_text() and "MKE2FS_CONFIG" not in out.read_text()
    assert not planted[1].exists()


def test_reaper_is_isolated_and_imports_the_parents_hyperrun(
        planted: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evil, marker = planted
    victim = tmp_path / "leftover"
    victim.write_text("removed once the domain is gone")
    spawned: list[list[str]] = []
    monkeypatch.setattr(reaper, "spawn_detached", spawned.append)
    # The test driver has no domain with this UUID: the reaper goes straight to clean-up.
    reaper.spawn("test:///default", "6a0b7a2e-1111-4c9e-9a4b-0123456789ab",
                 DomainOwner("5702a1e4c3d9", "0" * 64), [victim])
    (argv,) = spawned
    assert argv[1:3] == ["-I", "-c"] and argv[4] == str(REPO)  # the parent's own package
    subproc.spawn_detached(argv)
    deadline = time.monotonic() + 20
    while victim.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not victim.exists()
    assert not marker.exists(), marker.read_text()
    # And the old way of starting it really would have run the planted code.
    subprocess.run([sys.executable, "-m", "hyperrun.containers.reaper"], capture_output=True)
    assert marker.exists()


def test_bench_cli_runs_do_not_import_from_the_callers_directory(
        planted: tuple[Path, Path], tmp_path: Path) -> None:
    """`bench boot --cli-runs` times hyperrun itself: isolated, in "/", never `-m` in the cwd."""
    evil, marker = planted
    (evil / "hyperrun" / "__main__.py").write_text((evil / "hyperrun" / "__init__.py").read_text())
    store = Store(tmp_path / "store")
    store.ensure()
    # No such image in the empty store: the real hyperrun fails at once, a planted one would
    # have run first.
    with pytest.raises(boot.BenchFailed):
        boot.cli_wall(boot.BootBench(image="no-such-image"), store)
    assert not marker.exists()


def test_bench_workers_start_in_root(planted: tuple[Path, Path],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A spawned worker imports multiprocessing before anything of ours: not from the cwd."""
    evil, marker = planted
    (evil / "multiprocessing").mkdir()
    (evil / "multiprocessing" / "__init__.py").write_text(
        (evil / "hyperrun" / "__init__.py").read_text())
    # The environment hyperrun itself started with is the caller's own; the cwd is the risk.
    monkeypatch.delenv("PYTHONPATH")
    with boot.worker_pool(1) as pool:
        assert pool.submit(os.getcwd).result(timeout=60) == "/"
    assert not marker.exists()
