"""The plot of a boot benchmark: the CDF of totals and a stacked bar of phase medians.

matplotlib is the optional extra `bench` (pyproject.toml): only --plot needs it, and it
is imported only then. The Agg backend draws without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FORMATS = (".png", ".svg")
# Distinct colours in phase order; a colour-blind-safe qualitative palette (Okabe-Ito).
COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
           "#999999", "#000000")
LABEL_MIN = 0.04  # a segment narrower than this share of the bar gets no inline label


class PlotUnavailable(RuntimeError):
    pass


def draw(report: dict[str, Any], path: Path) -> None:
    """Write the plot of report to path (.png or .svg)."""
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"{path}: the plot is written as .png or .svg")
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotUnavailable("--plot needs matplotlib (pip install 'hyperrun[bench]')") \
            from exc
    matplotlib.use("Agg")
    from matplotlib import pyplot

    fig, (cdf, bar) = pyplot.subplots(2, 1, figsize=(10, 8), height_ratios=(3, 2))
    try:
        _cdf(cdf, report)
        _bars(bar, report)
        env, settings = report["environment"], report["settings"]
        fig.suptitle(f"hyperrun run --rm {settings['image']} true: {report['throughput']['runs']}"
                     f" runs, {settings['parallel']} at a time, {env['accelerator']}, "
                     f"{settings['cpus']} vCPU, {settings['memory_mib']} MiB")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        pyplot.close(fig)


def _cdf(ax: Any, report: dict[str, Any]) -> None:
    totals = sorted(r["total"] for r in report["runs"])
    n = len(totals)
    ax.step([0.0, *totals], [0.0, *((i + 1) / n for i in range(n))], where="post",
            color=COLOURS[4], label="run --rm ... true (total)")
    cli = report.get("cli_wall")
    if cli:
        ax.axvline(cli["p50"], color=COLOURS[5], linestyle="--",
                   label="the same as a CLI command (median)")
    for key, style in (("p50", ":"), ("p90", "-.")):
        ax.axvline(report["total"][key], color="grey", linestyle=style,
                   label=f"{key} of the total")
    ax.set_xlabel("seconds from run() called to its return")
    ax.set_ylabel("fraction of runs done")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.set_title("How long a boot takes (CDF)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")


def _bars(ax: Any, report: dict[str, Any]) -> None:
    phases = report["phases"]
    names = [n for n in report["phases_in_total"] if phases.get(n)]
    medians = [phases[n]["p50"] for n in names]
    whole = sum(medians) or 1.0
    left = 0.0
    for i, (name, value) in enumerate(zip(names, medians, strict=True)):
        ax.barh(1, value, left=left, color=COLOURS[i % len(COLOURS)], edgecolor="white",
                label="until " + name.replace("_", " "))
        if value / whole >= LABEL_MIN:
            ax.text(left + value / 2, 1, name.replace("_", "\n"), ha="center", va="center",
                    fontsize=7)
        left += value
    gone = phases.get("vm_gone")
    if gone:
        exit_at = left - (phases.get("run_returned") or {}).get("p50", 0.0)
        ax.barh(0, gone["p50"], left=exit_at, color="white", edgecolor="black", hatch="//",
                label="VM gone (after exit; not in the total)")
    ax.set_yticks([1, 0], ["phases (median each)", "teardown"])
    ax.set_xlabel("seconds (medians of each phase; they need not add up to the median total)")
    ax.set_title("Where a boot's time goes: each segment lasts until the milestone it names")
    ax.set_xlim(left=0)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=4, fontsize=8)
