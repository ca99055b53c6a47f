"""Distributions of benchmark timings: min, p50, p90, p99 and max."""

from __future__ import annotations

import math
from collections.abc import Sequence

KEYS = ("min", "p50", "p90", "p99", "max")
QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, linearly interpolated between ranks.

    The "linear" method (numpy's default, R's type 7): rank q * (n - 1). With few runs the
    high percentiles lie between the largest values, never beyond the maximum.
    """
    if not ordered:
        raise ValueError("no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not within 0..1")
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float] | None:
    """min, p50, p90, p99 and max of values, in seconds; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    out = {"min": ordered[0]}
    out.update({key: percentile(ordered, q) for key, q in QUANTILES.items()})
    out["max"] = ordered[-1]
    return out
