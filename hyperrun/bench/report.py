"""The report of `hyperrun bench boot`, as the JSON document it is written as.

Every duration is in seconds. Distributions are objects with min, p50, p90, p99 and max
(bench/stats.py); a phase no run could time is null. The phases of `phases_in_total`
add up to `total` run by run; vm_gone is counted from exit_reported and is not part of it.
Each run also lists its milestones as measured (seconds from its start, before phases
that overlap are counted as 0; see timeline.build).
Throughput: runs / wall, where wall is, one run at a time, the sum of the totals (runs
wait for the VM before them to go, untimed) and, with --parallel, the wall-clock time
from the first measured run's start to the last one's return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hyperrun.bench.stats import summary
from hyperrun.bench.timeline import (
    BOOTED_AHEAD,
    MILESTONES,
    PHASES,
    TEARDOWN,
    TEARDOWN_TEXT,
    Sample,
)

SCHEMA = 1


def _known(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def run_record(s: Sample) -> dict[str, Any]:
    return {"total": s.total, "phases": dict(s.phases), TEARDOWN: s.vm_gone,
            "milestones": dict(s.milestones),
            "mapping_error": s.mapping_error, "container_round_trip": s.container_round_trip,
            "guest_stamps_dropped": s.guest_dropped, "overlapped_milestones": s.overlapped}


def make(settings: dict[str, Any], env: dict[str, Any], samples: Sequence[Sample],
         wall: float, cli: Sequence[float]) -> dict[str, Any]:
    """The report of measured runs, taking `wall` seconds, and of `cli` command lines."""
    phases: dict[str, dict[str, float] | None] = {
        name: summary(_known([s.phases[name] for s in samples])) for name in PHASES}
    phases[TEARDOWN] = summary(_known([s.vm_gone for s in samples]))
    counts = {name: len(_known([s.phases[name] for s in samples])) for name in PHASES}
    counts[TEARDOWN] = len(_known([s.vm_gone for s in samples]))
    return {
        "schema": SCHEMA,
        "benchmark": "boot",
        "units": "seconds",
        "settings": settings,
        "environment": env,
        "total": summary([s.total for s in samples]),
        "phases": phases,
        "phase_order": [*PHASES, TEARDOWN],
        # A warm run's VM booted before it: those phases are 0 and not listed.
        "phases_in_total": [p for p in PHASES
                            if not (settings.get("warm") and p in BOOTED_AHEAD)],
        "phase_descriptions": {**dict(MILESTONES), TEARDOWN: TEARDOWN_TEXT},
        "phase_runs": counts,
        "mapping_error": summary(_known([s.mapping_error for s in samples])),
        "container_round_trip": summary([s.container_round_trip for s in samples]),
        "guest_stamps_dropped": [s.guest_dropped for s in samples if s.guest_dropped],
        "overlapped_milestones": sum(s.overlapped for s in samples),
        "throughput": {"parallel": settings["parallel"], "runs": len(samples),
                       "wall": wall, "boots_per_second": len(samples) / wall if wall else None},
        "cli_wall": summary(list(cli)),
        "cli_runs": len(cli),
        "runs": [run_record(s) for s in samples],
    }
