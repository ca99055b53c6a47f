"""`hyperrun bench boot`: options in, a boot benchmark's table, JSON and plot out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hyperrun import config
from hyperrun.bench import boot, plot
from hyperrun.cli import bench_verbs
from hyperrun.cli.bench_output import Bar, count, emit, seconds
from hyperrun.cli.run import parse_cpus, parse_memory
from hyperrun.errors import HyperrunError, UsageError
from hyperrun.spec import Accel
from hyperrun.store import Store
from hyperrun.vm import hypervisor

RUNS_MAX = 10_000
PARALLEL_MAX = 64


def register(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = verbs.add_parser("bench", help="measure hyperrun (boot, exec, density)",
                         description="Benchmarks of hyperrun on this host.")
    kinds = p.add_subparsers(dest="bench", metavar="BENCHMARK", parser_class=type(p))
    kinds.required = True
    b = kinds.add_parser("boot", help="time `run --rm IMAGE true`, phase by phase",
                         description="Time `hyperrun run --rm IMAGE true` through hyperrun's "
                                     "own run path, with a timeline of its phases (host "
                                     "milestones and the guest agent's stamps).")
    b.add_argument("--runs", type=int, default=10, help="measured runs (default 10)")
    b.add_argument("--warmup", type=int, default=1,
                   help="runs before measuring, not counted (default 1)")
    b.add_argument("--parallel", type=int, default=1,
                   help="boots in flight at once (default 1); reports boots per second")
    b.add_argument("--image", default="busybox", help="the image to boot (default busybox)")
    b.add_argument("--cpus", help="virtual CPUs (default: run.cpus in config.yaml, else 1)")
    b.add_argument("--memory", "-m", help="guest RAM (default: run.memory, else 512m)")
    b.add_argument("--accel", choices=[a.value for a in Accel],
                   help="kvm, tcg or auto (default: run.accel in config.yaml, else auto)")
    b.add_argument("--cli-runs", type=int, default=None,
                   help="also time this many `hyperrun run --rm IMAGE true` command lines, "
                        "Python start-up included (default 2, 0 with --parallel)")
    b.add_argument("--json", metavar="FILE", help="write the report as JSON (- : stdout only, "
                                                  "no table and no progress)")
    b.add_argument("--plot", type=Path, metavar="FILE",
                   help="draw the CDF of totals and the phase medians (.png or .svg; "
                        "needs matplotlib)")
    b.add_argument("--connect", help="libvirt URI (default $HYPERRUN_CONNECT or qemu:///system)")
    b.add_argument("--warm", action="store_true",
                   help="take every run's VM from a pool (`hyperrun pool`; one of size 1 is "
                        "made for the bench if the store has none that fits)")
    b.set_defaults(func=_boot)
    bench_verbs.register(kinds)


def to_bench(args: argparse.Namespace) -> boot.BootBench:
    defaults = config.load()
    parallel = count("--parallel", args.parallel, 1, PARALLEL_MAX)
    cli_runs = args.cli_runs if args.cli_runs is not None else (2 if parallel == 1 else 0)
    if args.plot is not None and args.plot.suffix.lower() not in plot.FORMATS:
        raise UsageError(f"invalid --plot {str(args.plot)!r}", hint="name a .png or .svg file")
    return boot.BootBench(
        image=args.image,
        runs=count("--runs", args.runs, 1, RUNS_MAX),
        warmup=count("--warmup", args.warmup, 0, RUNS_MAX),
        parallel=parallel,
        cpus=parse_cpus(args.cpus or defaults.cpus or "1"),
        memory_mib=parse_memory(args.memory or defaults.memory or "512m"),
        accel=Accel(args.accel or defaults.accel or Accel.AUTO.value),
        uri=hypervisor.uri_from_env(args.connect),
        cli_runs=count("--cli-runs", cli_runs, 0, RUNS_MAX),
        warm=_warm(args.warm, parallel),
    )


def _warm(warm: bool, parallel: int) -> bool:
    if warm and parallel != 1:
        raise UsageError("--warm runs one at a time", hint="leave out --parallel or --warm")
    return warm


def _boot(args: argparse.Namespace, store: Store) -> int:
    bench = to_bench(args)
    to_stdout = args.json == "-"
    with Bar(sys.stderr, quiet=to_stdout) as bar:
        report = boot.run(bench, store, bar)
    if args.plot is not None:
        try:
            plot.draw(report, args.plot)
        except plot.PlotUnavailable as exc:
            raise HyperrunError(str(exc), hint="or leave out --plot") from None
    return emit(args.json, report, table)


def table(report: dict[str, Any]) -> list[str]:
    """The report for people: settings, environment, phases, throughput."""
    s, env, t = report["settings"], report["environment"], report["throughput"]
    kib = "{:,} KiB".format
    lines = [
        f"hyperrun bench boot: `run --rm {s['image']} true`, {t['runs']} runs after "
        f"{s['warmup']} warm-up, {s['parallel']} at a time"
        f"{', warm (VMs from a pool)' if s.get('warm') else ''}",
        f"accelerator {env['accelerator']} ({env['accelerator_reason']}); "
        f"{env['host_cpu'] or 'CPU unknown'}, {env['host_cores']} cores",
        f"QEMU {env['qemu_version']}, libvirt {env['libvirt_version']}, guest kernel "
        f"{env['guest_kernel_version'] or 'unknown'} "
        f"({kib((env['guest_kernel_bytes'] or 0) >> 10)}), "
        f"initrd {kib((env['initrd_bytes'] or 0) >> 10)}; {env['vcpus']} vCPU, "
        f"{env['memory_mib']} MiB",
        "",
        f"{'phase (ends when)':22}{'min':>7}{'p50':>7}{'p90':>7}{'p99':>7}{'max':>7}  seconds",
    ]
    for name in report["phases_in_total"]:
        lines.append(f"{name:22}{seconds(report['phases'][name])}")
    lines.append(f"{'total':22}{seconds(report['total'])}")
    lines.append(f"{'vm_gone (after exit)':22}{seconds(report['phases']['vm_gone'])}")
    lines.append(f"{'guest clock error':22}{seconds(report['mapping_error'])}")
    if report["cli_wall"]:
        lines.append(f"{'CLI `hyperrun run`':22}{seconds(report['cli_wall'])}  "
                     f"({report['cli_runs']} runs, Python start-up included)")
    lines.append("")
    rate = t["boots_per_second"]
    lines.append(f"throughput: {rate:.2f} boots/s ({t['runs']} runs in {t['wall']:.1f} s, "
                 f"{t['parallel']} at a time)")
    dropped = report["guest_stamps_dropped"]
    if dropped:
        lines.append(f"guest stamps dropped in {len(dropped)} runs: {dropped[0]}")
    return lines
