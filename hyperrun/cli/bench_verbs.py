"""`hyperrun bench exec` and `hyperrun bench density`: options in, tables and JSON out."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hyperrun.bench import density, exec_latency
from hyperrun.cli.bench_output import Bar, count, emit, environment_line, seconds
from hyperrun.cli.run import parse_cpus, parse_memory
from hyperrun.errors import UsageError
from hyperrun.store import Store
from hyperrun.vm import hypervisor

RUNS_MAX = 10_000
COUNT_MAX = 500
SETTLE_MAX = 600
MIB = 1 << 20


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", default="busybox", help="the image (default busybox)")
    p.add_argument("--cpus", default="1", help="virtual CPUs per container (default 1)")
    p.add_argument("--memory", "-m", default="128m", help="guest RAM (default 128m)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON (- : stdout only, "
                                                  "no table and no progress)")
    p.add_argument("--connect", help="libvirt URI (default $HYPERRUN_CONNECT or qemu:///system)")


def register(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    e = kinds.add_parser("exec", help="time `exec C true` into a running container",
                         description="Start one idle container and time `exec C true` into "
                                     "it, through the monitor in-process (the RPC) and as a "
                                     "command line, beside Python's and hyperrun's own "
                                     "start-up; then remove it.")
    e.add_argument("--runs", type=int, default=20, help="measured rounds (default 20)")
    e.add_argument("--warmup", type=int, default=3, help="rounds not counted (default 3)")
    _common(e)
    e.set_defaults(func=_exec)
    d = kinds.add_parser("density", help="start idle containers, measure what each costs",
                         description="Start --count idle containers one after another, "
                                     "measure each one's host memory (RSS, PSS) and the "
                                     "guest's own use, check that all still answer `exec "
                                     "true`, then remove them all.")
    d.add_argument("--count", type=int, required=True, help="containers to start")
    d.add_argument("--settle", type=float, default=15.0,
                   help="seconds to wait after the last start before measuring (default 15)")
    _common(d)
    d.set_defaults(func=_density)


def _exec(args: argparse.Namespace, store: Store) -> int:
    bench = exec_latency.ExecBench(
        image=args.image, runs=count("--runs", args.runs, 1, RUNS_MAX),
        warmup=count("--warmup", args.warmup, 0, RUNS_MAX), cpus=parse_cpus(args.cpus),
        memory_mib=parse_memory(args.memory), uri=hypervisor.uri_from_env(args.connect))
    with Bar(sys.stderr, quiet=args.json == "-") as bar:
        report = exec_latency.run(bench, store, bar)
    return emit(args.json, report, exec_table)


def _density(args: argparse.Namespace, store: Store) -> int:
    settle = args.settle
    if not 0 <= settle <= SETTLE_MAX:
        raise UsageError(f"invalid --settle {settle:g}", hint=f"give 0 to {SETTLE_MAX} seconds")
    bench = density.DensityBench(
        count=count("--count", args.count, 1, COUNT_MAX), image=args.image,
        memory_mib=parse_memory(args.memory), cpus=parse_cpus(args.cpus), settle=settle,
        uri=hypervisor.uri_from_env(args.connect))
    with Bar(sys.stderr, quiet=args.json == "-") as bar:
        report = density.run(bench, store, bar)
    return emit(args.json, report, density_table)


def _environment(report: dict[str, Any]) -> str:
    s = report["settings"]
    return (f"{environment_line(report['environment'])}; {s['cpus']} vCPU, "
            f"{s['memory_mib']} MiB, image {s['image']}")


def exec_table(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    lines = [f"hyperrun bench exec: {s['runs']} rounds after {s['warmup']} warm-up",
             _environment(report), "",
             f"{'':12}{'min':>7}{'p50':>7}{'p90':>7}{'p99':>7}{'max':>7}  seconds"]
    for kind in report["kinds"]:
        lines.append(f"{kind:12}{seconds(report['latency'][kind])}  "
                     f"{report['descriptions'][kind]}")
    failed = {k: n for k, n in report["failures"].items() if n}
    if failed:
        lines.append("failures: " + ", ".join(f"{k} {n}" for k, n in failed.items()))
    return lines


def _mib(stats: dict[str, float] | None) -> str:
    if not stats:
        return "      -" * 3
    return "".join(f"{stats[k] / MIB:7.1f}" for k in ("min", "p50", "max"))


def density_table(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    lines = [f"hyperrun bench density: {report['started']} of {s['count']} idle containers "
             f"started, {report['running']} running after {s['settle']:g} s, "
             f"{report['answering']} answering `exec true`",
             _environment(report), "",
             f"{'per container':26}{'min':>7}{'p50':>7}{'max':>7}  MiB"]
    for key in density.MEASURED:
        lines.append(f"{key:26}{_mib(report['memory'][key])}")
    lines += ["", f"{'':26}{'min':>7}{'p50':>7}{'p90':>7}{'p99':>7}{'max':>7}  seconds",
              f"{'start (run -d)':26}{seconds(report['start_time'])}",
              f"{'exec true, all up':26}{seconds(report['exec_under_load'])}",
              "", f"host MemAvailable: {report['host_available_before'] // MIB} MiB before, "
                  f"{report['host_available_settled'] // MIB} MiB with all up"]
    if report["stopped_because"]:
        lines.append(f"stopped early: {report['stopped_because']}")
    errors = [e for e in report["containers"] if "error" in e]
    if errors:
        lines.append(f"{len(errors)} container(s) not measured: {errors[0]['error']}")
    return lines
