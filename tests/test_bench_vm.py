"""`hyperrun bench boot` end to end: real boots, checked for shape and sanity, never speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hyperrun.bench.stats import KEYS

pytestmark = pytest.mark.vm

# The phases of a run add up to its total by construction (consecutive milestones on one
# clock); only float rounding separates them.
SUM_TOLERANCE = 1e-6
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(vm: Any, tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "boot.json"
    proc = vm.hyperrun("bench", "boot", "--json", str(out), *args, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"total" in proc.stdout, proc.stdout.decode()  # the table
    return json.loads(out.read_text())


def _check_distribution(stats: dict[str, float]) -> None:
    assert list(stats) == list(KEYS), stats
    values = [stats[k] for k in KEYS]
    assert values == sorted(values) and values[0] >= 0, stats


def _check(report: dict[str, Any], runs: int) -> None:
    assert report["benchmark"] == "boot" and len(report["runs"]) == runs
    assert report["phase_order"] == [*report["phases_in_total"], "vm_gone"]
    _check_distribution(report["total"])
    for name in report["phase_order"]:
        assert report["phases"][name] is not None, name  # every phase timed in some run
        _check_distribution(report["phases"][name])
    assert report["guest_stamps_dropped"] == [], report["guest_stamps_dropped"]
    for run in report["runs"]:
        phases = [run["phases"][name] for name in report["phases_in_total"]]
        assert all(p is not None and p >= 0 for p in phases), run
        assert abs(sum(phases) - run["total"]) <= SUM_TOLERANCE, run
        assert run["vm_gone"] is not None and run["vm_gone"] >= 0, run
        # The mapping error is bounded by EXEC's round trip, which the run contains.
        assert 0 <= run["mapping_error"] <= run["total"], run
    env = report["environment"]
    assert env["accelerator"] in ("kvm", "tcg") and env["accelerator_reason"], env
    assert env["guest_kernel_bytes"] > 0 and env["initrd_bytes"] > 0, env
    assert env["qemu_version"] and env["libvirt_version"] and env["host_cores"] >= 1, env
    assert report["throughput"]["boots_per_second"] > 0, report["throughput"]


def test_bench_boot_one_at_a_time(vm, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "boot.png"
    report = _bench(vm, tmp_path, "--runs", "3", "--warmup", "1", "--cli-runs", "1",
                    "--plot", str(plot))
    _check(report, 3)
    assert report["settings"]["parallel"] == 1
    assert report["cli_runs"] == 1 and report["cli_wall"]["min"] > 0, report["cli_wall"]
    data = plot.read_bytes()
    assert len(data) > len(PNG_MAGIC) and data.startswith(PNG_MAGIC)


def test_bench_boot_in_parallel(vm, tmp_path: Path) -> None:
    report = _bench(vm, tmp_path, "--runs", "2", "--warmup", "0", "--parallel", "2")
    _check(report, 2)
    assert report["settings"]["parallel"] == 2 and report["cli_runs"] == 0


def test_bench_boot_json_to_stdout_only(vm) -> None:
    proc = vm.hyperrun("bench", "boot", "--runs", "1", "--warmup", "0", "--cli-runs", "0",
                       "--json", "-", timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)  # nothing but the JSON
    _check(report, 1)


def test_bench_boot_refuses_a_missing_image(vm) -> None:
    proc = vm.hyperrun("bench", "boot", "--image", "no-such-image", "--runs", "1")
    assert proc.returncode != 0
    assert b"image not found" in proc.stderr
