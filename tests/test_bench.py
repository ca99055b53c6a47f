"""`hyperrun bench boot` without a VM: statistics, the guest's stamps, mapping, phases."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hyperrun.bench import plot, report, stats
from hyperrun.bench.timeline import (
    BOOTED_AHEAD,
    GUEST_PHASES,
    PHASES,
    TEARDOWN,
    RawRun,
    build,
    map_clock,
    process_start,
)
from hyperrun.cli import bench as cli_bench
from hyperrun.errors import UsageError
from hyperrun.vm.protocol import Message, Msg
from hyperrun.vm.stamps import NS_MAX, StampError, parse

MS = 1_000_000  # ns
REPO = Path(__file__).resolve().parent.parent


# -- statistics ---------------------------------------------------------------------------

def test_percentiles_interpolate_linearly_between_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert stats.percentile(values, 0.5) == 3.0
    assert stats.percentile(values, 0.9) == pytest.approx(4.6)
    assert stats.percentile(values, 0.99) == pytest.approx(4.96)
    assert stats.percentile([7.0], 0.99) == 7.0


def test_summary_is_ordered_and_never_beyond_the_extremes() -> None:
    s = stats.summary([0.3, 0.1, 0.9, 0.5, 0.2, 0.7])
    assert s is not None and list(s) == list(stats.KEYS)
    ordered = [s[k] for k in stats.KEYS]
    assert ordered == sorted(ordered)
    assert (s["min"], s["max"]) == (0.1, 0.9)
    assert stats.summary([]) is None


@pytest.mark.parametrize("q", [-0.1, 1.5])
def test_percentile_refuses_quantiles_outside_0_to_1(q: float) -> None:
    with pytest.raises(ValueError):
        stats.percentile([1.0], q)


# -- the guest's stamps -------------------------------------------------------------------

def _ok(**override: str) -> Message:
    fields = {"agent_ns": 500 * MS, "request_ns": 510 * MS, "mounted_ns": 540 * MS,
              "now_ns": 560 * MS, **override}
    return Message.make(Msg.OK, *((k, v) for k, v in fields.items() if v is not None))


def _started(**override: str) -> Message:
    fields = {"id": 1, "pid": 2, "request_ns": 600 * MS, "exec_ns": 640 * MS,
              "now_ns": 641 * MS, **override}
    return Message.make(Msg.STARTED, *((k, v) for k, v in fields.items() if v is not None))


def test_stamps_parse_in_order() -> None:
    s = parse(_ok(), _started())
    assert (s.agent, s.mounted, s.exec) == (500 * MS, 540 * MS, 640 * MS)
    assert (s.ok_request, s.ok_sent, s.started_request, s.started_sent) == (
        510 * MS, 560 * MS, 600 * MS, 641 * MS)


@pytest.mark.parametrize("value", ["", "+5", "-1", " 5", "5 ", "1_000", "٣", "0x10", "1.5",
                                   "9" * 30, str(NS_MAX + 1)])
def test_malformed_or_absurd_stamps_are_refused(value: str) -> None:
    with pytest.raises(StampError):
        parse(_ok(mounted_ns=value), _started())


def test_missing_stamps_are_refused() -> None:
    with pytest.raises(StampError, match="without exec_ns"):
        parse(_ok(), _started(exec_ns=None))


@pytest.mark.parametrize("ok, started", [
    ({"mounted_ns": str(400 * MS)}, {}),  # mounted before the agent started
    ({}, {"exec_ns": str(550 * MS)}),  # exec'd before OK was sent
    ({"agent_ns": "0"}, {}),
    ({}, {"now_ns": str(639 * MS)}),
])
def test_stamps_out_of_order_are_refused(ok: dict, started: dict) -> None:
    with pytest.raises(StampError, match="out of order"):
        parse(_ok(**ok), _started(**started))


def test_stamps_come_only_in_ok_and_started() -> None:
    with pytest.raises(StampError):
        parse(_started(), _ok())


# -- mapping the guest's clock and building phases -----------------------------------------

OFFSET = 100.0  # host seconds at guest time 0 in the synthetic runs below


def _host(**override: float) -> dict[str, float]:
    # The guest's replies go out at OFFSET + 0.560 and + 0.641 and arrive 1 ms later.
    host = {"start": 99.0, "overlay": 99.05, "created": 99.5, "container_sent": 99.51,
            "ok": OFFSET + 0.561, "exec_sent": OFFSET + 0.598, "started": OFFSET + 0.642,
            "exit": OFFSET + 0.70, "returned": OFFSET + 0.71}
    host.update(override)
    return host


def _raw(host: dict[str, float] | None = None, ok: Message | None = None,
         started: Message | None = None, qemu: float | None = 99.1) -> RawRun:
    return RawRun(host or _host(), {"ok": ok or _ok(), "started": started or _started()},
                  "uuid-1", qemu)


def test_the_mapping_error_is_the_round_trip_less_the_guests_time() -> None:
    m = map_clock(_host(), parse(_ok(), _started()))
    # EXEC: sent at +0.598, taken at guest 0.600, answered at 0.641, received at +0.642:
    # the offset lies within [OFFSET - 0.002, OFFSET + 0.001].
    assert m.offset == pytest.approx(OFFSET + 0.001)
    assert m.error == pytest.approx(0.003)


def test_a_guest_clock_that_disagrees_with_the_host_is_refused() -> None:
    # By OK's clock, the agent took EXEC 36 ms before the host sent it.
    early = _started(request_ns=str(561 * MS), exec_ns=str(562 * MS), now_ns=str(563 * MS))
    with pytest.raises(StampError, match="disagrees"):
        map_clock(_host(), parse(_ok(), early))


def test_phases_add_up_to_the_total() -> None:
    s = build(_raw())
    assert list(s.phases) == list(PHASES)
    assert all(v is not None and v >= 0 for v in s.phases.values())
    assert sum(s.phases.values()) == pytest.approx(s.total)  # type: ignore[arg-type]
    assert s.total == pytest.approx(1.71)
    assert s.phases["agent_started"] == pytest.approx(0.5)
    assert s.phases["process_execd"] == pytest.approx(0.1)
    assert s.mapping_error == pytest.approx(0.003)
    assert s.guest_dropped is None and s.overlapped == 0


def test_a_guest_milestone_before_the_hosts_previous_one_counts_as_overlapped() -> None:
    s = build(_raw(_host(created=OFFSET + 0.2)))  # kernel entered (OFFSET) before createXML
    assert s.phases["kernel_entered"] == 0.0 and s.overlapped == 1
    assert sum(s.phases.values()) == pytest.approx(s.total)  # type: ignore[arg-type]


def test_bad_guest_stamps_drop_only_the_guest_phases() -> None:
    s = build(_raw(ok=_ok(mounted_ns="banana")))
    assert s.guest_dropped is not None and "mounted_ns" in s.guest_dropped
    assert all(s.phases[name] is None for name in GUEST_PHASES)
    assert s.phases["domain_created"] is not None and s.phases["run_returned"] is not None


def test_a_guest_claiming_its_agent_started_before_the_run_is_dropped() -> None:
    early = _ok(agent_ns=str(10 * MS))  # mapped to OFFSET + 0.011, before the start
    s = build(_raw(_host(start=OFFSET + 0.05), ok=early))
    assert s.guest_dropped is not None and "before the run" in s.guest_dropped


def test_a_warm_run_leaves_out_the_boot_it_did_not_wait_for() -> None:
    # A pooled VM: booted long before the run (agent at OFFSET + 0.5), claimed at +0.51.
    host = _host(start=OFFSET + 0.505, warm=OFFSET + 0.507, overlay=OFFSET + 0.508,
                 created=OFFSET + 0.509)
    s = build(_raw(host, qemu=50.0))
    assert s.guest_dropped is None and s.overlapped == 0
    assert all(s.phases[name] == 0.0 for name in BOOTED_AHEAD)
    assert s.phases["root_mounted"] == pytest.approx(0.541 - 0.508)
    assert sum(s.phases.values()) == pytest.approx(s.total)  # type: ignore[arg-type]
    settings = {"parallel": 1, "warm": True}
    assert report.make(settings, {}, [s], 1.0, [])["phases_in_total"] == [
        p for p in PHASES if p not in BOOTED_AHEAD]


def test_guest_time_0_before_the_run_only_overlaps() -> None:
    # The guest's early clock is rough: time 0 may map before the run began.
    s = build(_raw(_host(start=OFFSET + 0.1, overlay=OFFSET + 0.11, created=OFFSET + 0.3),
                   qemu=OFFSET + 0.2))
    assert s.guest_dropped is None and s.phases["kernel_entered"] == 0.0 and s.overlapped == 1
    assert s.milestones["kernel_entered"] == pytest.approx(-0.099)


def test_an_unknown_qemu_start_leaves_its_two_phases_unknown() -> None:
    s = build(_raw(qemu=None))
    assert s.phases["qemu_running"] is None and s.phases["domain_created"] is None
    assert s.phases["kernel_entered"] is not None


def test_process_start_reads_starttime(tmp_path: Path) -> None:
    fields = ["S"] + ["0"] * 18 + ["12345"]  # state ... starttime is field 22
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text(f"42 (qemu (x) y) {' '.join(fields)} 0 0\n")
    assert isinstance(process_start(42, tmp_path), float)
    assert process_start(43, tmp_path) is None


# -- the report, the plot, the command line ----------------------------------------------

def _report() -> dict:
    samples = [build(_raw(_host(returned=OFFSET + 0.71 + i / 10))) for i in range(4)]
    settings = {"image": "busybox", "parallel": 1, "warmup": 1, "cpus": 1, "memory_mib": 512}
    env = {"accelerator": "tcg"}
    return report.make(settings, env, samples, wall=8.0, cli=[2.0])


def test_report_shape() -> None:
    r = json.loads(json.dumps(_report()))
    assert r["phase_order"] == [*PHASES, TEARDOWN]
    for name in PHASES:
        assert list(r["phases"][name]) == list(stats.KEYS)
    assert r["phases"][TEARDOWN] is None  # never watched here
    assert r["throughput"]["boots_per_second"] == 0.5
    assert len(r["runs"]) == 4 and r["cli_wall"]["p50"] == 2.0


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    data, out = tmp_path / "report.json", tmp_path / "boot.png"
    data.write_text(json.dumps(_report()))
    # In a child: matplotlib and numpy would grow this process by ~100 MB, which every
    # later child inherits as its peak RSS (test_images_limits measures one).
    subprocess.run([sys.executable, "-c", "import json, sys\nfrom pathlib import Path\n"
                    "from hyperrun.bench import plot\n"
                    "plot.draw(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))",
                    str(data), str(out)], check=True, cwd=REPO)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_refuses_other_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=".png or .svg"):
        plot.draw(_report(), tmp_path / "boot.jpg")


def _args(**kw: object) -> argparse.Namespace:
    base = {"runs": 3, "warmup": 1, "parallel": 1, "image": "busybox", "cpus": None,
            "memory": None, "accel": None, "cli_runs": None, "plot": None, "connect": None,
            "warm": False}
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("kw", [{"runs": 0}, {"warmup": -1}, {"parallel": 0},
                                {"parallel": 65}, {"plot": Path("x.jpg")}])
def test_bench_options_are_checked(kw: dict) -> None:
    with pytest.raises(UsageError):
        cli_bench.to_bench(_args(**kw))


def test_cli_runs_default_to_none_under_load() -> None:
    assert cli_bench.to_bench(_args()).cli_runs == 2
    assert cli_bench.to_bench(_args(parallel=2)).cli_runs == 0
