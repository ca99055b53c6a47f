"""`hyperrun compare` end to end: a runc container and a real microVM, checked for shape and
for the differences that must be there, never for speed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hyperrun.bench import compare_rows, runc
from hyperrun.bench.stats import KEYS
from hyperrun.images.store import ImageStore
from hyperrun.store import Store

pytestmark = pytest.mark.vm

COLUMNS = ["host", "runc", "microvm"]


def _leftovers(vm: Any) -> list[str]:
    store = Store(vm.root)
    made = [p.name for p in store.tmp.glob(f"{runc.PREFIX}*")]
    ps = vm.hyperrun("ps", "-a", "--format", "{{.Names}}")
    return made + [n for n in ps.stdout.decode().split() if n.startswith("compare-")]


def _users(path: Path) -> list[int]:
    """Processes whose command line names path (a runc still working on a bundle)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(path).encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_compare_answers_every_probe_in_three_columns(vm, tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    proc = vm.hyperrun("compare", "--runs", "1", "--memory", "128m", "--json", str(out),
                       "--markdown", timeout=900)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().count("\n| Isolation |") >= 10  # the Markdown table
    report = json.loads(out.read_text())
    assert report["columns"] == COLUMNS
    rows = {r["probe"]: r for r in report["rows"]}
    assert list(rows) == [f.__name__ for f in compare_rows.ROWS]
    for row in report["rows"]:
        assert row["verdict"]
        for c in COLUMNS:
            assert row["values"][c] or row["skipped"].get(c), (row["probe"], c)
    raw = report["raw"]
    # The namespace container shares the host's kernel; the microVM runs its own.
    assert raw["runc"]["kernel"] == raw["host"]["kernel"] != raw["microvm"]["kernel"]
    # Neither instance sees the host's processes; only the microVM reports its own limits.
    for c in ("runc", "microvm"):
        assert int(raw[c]["procs"]) < int(raw["host"]["procs"])
    assert raw["microvm"]["nproc"] == "1"
    assert raw["runc"]["memtotal_kib"] == raw["host"]["memtotal_kib"]
    assert int(raw["microvm"]["memtotal_kib"]) <= 128 * 1024
    # Past its limit the workload was stopped in both, and both instances lived on.
    for c in ("runc", "microvm"):
        assert raw[c]["oom_status"] != "0" and raw[c]["alive_after_oom"], raw[c]
    assert raw["microvm"]["host_oom_lines"] == []
    # Nothing that touches kernel state ran on the host.
    assert set(rows["module"]["skipped"]) == {"host"} and set(rows["oom"]["skipped"]) == {"host"}
    for c in COLUMNS:
        stats = report["startup"][c]
        assert list(stats) == list(KEYS) and stats["min"] > 0
        assert raw[c]["memory_pss"] > 0
    assert raw["microvm"]["memory_pss"] > raw["runc"]["memory_pss"]
    assert _leftovers(vm) == []


def test_a_killed_compare_leaves_nothing_the_next_sweep_keeps(vm) -> None:
    store = Store(vm.root)
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "compare", "--runs", "1",
                             "--json", "-"], env=vm.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = None
    deadline = time.monotonic() + 120
    try:
        # Kill it while its runc container is up: the bundle's "idle" container exists.
        while state is None and time.monotonic() < deadline and proc.poll() is None:
            for d in store.tmp.glob(f"{runc.PREFIX}{proc.pid}-*"):
                if (d / "idle" / "config.json").exists() and (d / "state").is_dir():
                    state = d
            time.sleep(0.005)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert state is not None, "compare never started its runc container"
    # A runc the killed compare had started finishes on its own; the next command comes after.
    deadline = time.monotonic() + 60
    while _users(state) and time.monotonic() < deadline:
        time.sleep(0.05)
    runc.sweep(store)  # what the next compare does first
    assert not state.exists()
    assert list(runc.CGROUP_ROOT.glob(f"*/hyperrun-{state.name}-*")) == []
    assert _leftovers(vm) == []


def test_a_container_whose_state_was_lost_is_killed_by_the_sweep(vm) -> None:
    store = Store(vm.root)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    directory = store.tmp / f"{runc.PREFIX}{dead}-abcdef"
    directory.mkdir()
    b = runc.Bundles(directory, directory / "rootfs", cpus=1, memory_mib=64)
    ImageStore(store).build_rootfs(ImageStore(store).get("busybox"), b.rootfs)
    container = b.detached("idle", ["sleep", "2147483647"])
    cid = container.__enter__()  # and never left: as if compare were killed here
    pids = b.pids(cid)
    assert pids
    shutil.rmtree(directory)  # runc's state gone with it: only the cgroups still know
    assert list(runc.CGROUP_ROOT.glob(f"*/hyperrun-{cid}"))
    runc.sweep(store)
    assert list(runc.CGROUP_ROOT.glob(f"*/hyperrun-{cid}")) == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
