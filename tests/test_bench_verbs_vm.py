"""`hyperrun bench exec` and `bench density` end to end: real containers, shape and sanity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyperrun.bench.stats import KEYS

pytestmark = pytest.mark.vm


def _ordered(stats: dict[str, float]) -> None:
    assert list(stats) == list(KEYS), stats
    values = [stats[k] for k in KEYS]
    assert values == sorted(values) and values[0] > 0, stats


def _no_bench_containers(vm) -> None:  # type: ignore[no-untyped-def]
    ps = vm.hyperrun("ps", "-a", "--format", "{{.Names}}")
    assert [n for n in ps.stdout.decode().split() if n.startswith("bench-")] == []


def test_bench_exec_reports_ordered_percentiles_of_every_kind(vm) -> None:
    proc = vm.hyperrun("bench", "exec", "--runs", "2", "--warmup", "1", "--json", "-",
                       timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)  # nothing but the JSON
    assert report["benchmark"] == "exec" and report["kinds"] == ["rpc", "cli", "python",
                                                                 "version"]
    for kind in report["kinds"]:
        _ordered(report["latency"][kind])
        assert len(report["samples"][kind]) == 2
    assert report["failures"] == dict.fromkeys(report["kinds"], 0)
    assert report["environment"]["accelerator"] in ("kvm", "tcg")
    _no_bench_containers(vm)


def test_bench_density_measures_every_container_and_removes_them(vm, tmp_path: Path) -> None:
    out = tmp_path / "density.json"
    proc = vm.hyperrun("bench", "density", "--count", "2", "--settle", "0", "--json",
                       str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"answering" in proc.stdout  # the table
    report = json.loads(out.read_text())
    assert report["started"] == report["running"] == report["answering"] == 2, report
    for entry in report["containers"]:
        assert "error" not in entry, entry
        assert entry["qemu_pss"] <= entry["qemu_rss"] and entry["guest_used"] > 0
    for key in ("qemu_rss", "qemu_pss", "monitor_rss", "guest_used"):
        assert report["memory"][key]["min"] > 0, key
    _ordered(report["start_time"])
    _ordered(report["exec_under_load"])
    _no_bench_containers(vm)
