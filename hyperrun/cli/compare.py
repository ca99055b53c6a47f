"""`hyperrun compare`: isolation side by side (host, runc container, hyperrun microVM)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hyperrun import config
from hyperrun.bench import compare
from hyperrun.cli.bench_output import Bar, count, emit, environment_line
from hyperrun.cli.run import parse_cpus, parse_memory
from hyperrun.store import Store
from hyperrun.vm import hypervisor

RUNS_MAX = 1000
HEADINGS = {"host": "host", "runc": "runc container", "microvm": "hyperrun microVM"}
SKIPPED = "skipped: "


def register(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = verbs.add_parser("compare", help="isolation side by side: host, runc, microVM",
                         description="Run the same probes from the same image on the host, "
                                     "in a runc namespace container and in a hyperrun microVM "
                                     "(same CPU and memory limits), and print what each "
                                     "answered. Nothing that touches kernel state runs on "
                                     "the host.")
    p.add_argument("--image", default="busybox", help="the image (default busybox); probes "
                                                      "are busybox shell commands")
    p.add_argument("--runs", type=int, default=5, help="start-ups timed per column "
                                                       "(default 5; the median is shown)")
    p.add_argument("--cpus", default="1", help="CPU limit of both instances (default 1)")
    p.add_argument("--memory", "-m", default="128m",
                   help="memory limit of both instances (default 128m)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON (- : stdout "
                                                  "only, no table and no progress)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--connect", help="libvirt URI (default $HYPERRUN_CONNECT or qemu:///system)")
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace, store: Store) -> int:
    config.load()  # a broken config.yaml is reported before anything starts
    bench = compare.CompareBench(
        image=args.image, runs=count("--runs", args.runs, 1, RUNS_MAX),
        cpus=parse_cpus(args.cpus), memory_mib=parse_memory(args.memory),
        uri=hypervisor.uri_from_env(args.connect))
    with Bar(sys.stderr, quiet=args.json == "-") as bar:
        report = compare.run(bench, store, bar)
    return emit(args.json, report, markdown if args.markdown else table)


def _cell(row: dict[str, Any], column: str) -> str:
    value = row["values"].get(column)
    return SKIPPED + row["skipped"][column] if value is None else value


def _header(report: dict[str, Any]) -> str:
    s, env = report["settings"], report["environment"]
    return (f"hyperrun compare: image {s['image']}, {s['cpus']} CPU, {s['memory_mib']} MiB "
            f"limit, start-up median of {s['runs']}; {environment_line(env)}; "
            f"{env['runc_version'] or 'runc ?'}; load {env['loadavg_before'][0]:.2f}")


def table(report: dict[str, Any]) -> list[str]:
    """The comparison for a terminal: one block per probe, a verdict under each (emit
    escapes every line before printing)."""
    lines = [_header(report), ""]
    width = max(len(h) for h in HEADINGS.values()) + 2
    for row in report["rows"]:
        lines.append(f"{row['title']}  [{row['aspect']}]")
        for column in report["columns"]:
            lines.append(f"  {HEADINGS[column]:<{width}}{_cell(row, column)}")
        lines.append(f"  {'verdict':<{width}}{row['verdict']}")
        lines.append("")
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(report: dict[str, Any]) -> list[str]:
    """The comparison as a Markdown table, the article's rows in the first column."""
    columns = report["columns"]
    lines = [_md(_header(report)), "",
             "| aspect | probe | " + " | ".join(HEADINGS[c] for c in columns) + " | verdict |",
             "|---|---|" + "---|" * len(columns) + "---|"]
    for row in report["rows"]:
        cells = [_md(_cell(row, c)) for c in columns]
        lines.append(f"| {row['aspect']} | {_md(row['title'])} | " + " | ".join(cells)
                     + f" | {_md(row['verdict'])} |")
    return lines
