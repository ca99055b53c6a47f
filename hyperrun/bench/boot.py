"""`hyperrun bench boot`: time `run --rm IMAGE true`, phase by phase.

Each run goes through hyperrun's own run path (containers.run.run) with a timeline that
records the host's milestones and the guest's stamps (bench/timeline.py). One at a time
the runs happen in this process. With --parallel P they happen in P worker processes
(spawned, not forked: libvirt's threads do not survive a fork), each one run at a time,
so P boots are in flight at once: the run path forwards signals, which Python allows only
in a process's main thread, so threads cannot do it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperrun.bench import environment, report, warm
from hyperrun.bench.teardown import GoneWatcher
from hyperrun.bench.timeline import Recorder, Sample, build
from hyperrun.containers import run as container
from hyperrun.errors import HyperrunError
from hyperrun.images.model import Image
from hyperrun.images.store import ImageStore
from hyperrun.spec import Accel, PullPolicy, RunSpec
from hyperrun.store import Store
from hyperrun.subproc import isolated_python

COMMAND = ("true",)
GONE_TIMEOUT = 60.0  # at the end, how long to wait for the last VMs to go
CLI_TIMEOUT = 300.0

# Told of progress: (stage, runs done, runs in that stage). Stages: warmup, measure, cli.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BootBench:
    """What `hyperrun bench boot` was asked to do, validated by the CLI."""

    image: str
    runs: int = 10
    warmup: int = 1
    parallel: int = 1
    cpus: int = 1
    memory_mib: int = 512
    accel: Accel = Accel.AUTO
    uri: str = "qemu:///system"
    cli_runs: int = 0  # also time this many `hyperrun run --rm IMAGE true` subprocesses
    warm: bool = False  # every run takes a VM from a pool (bench/warm.py)


class BenchFailed(HyperrunError):
    pass


def _spec(bench: BootBench) -> RunSpec:
    return RunSpec(image=bench.image, command=COMMAND, remove=True, cpus=bench.cpus,
                   memory_mib=bench.memory_mib, accel=bench.accel, pull=PullPolicy.NEVER,
                   quiet=True)


def _never_pull(reference: str) -> Image:
    raise AssertionError("PullPolicy.NEVER does not pull")


def one_boot(bench: BootBench, store: Store) -> Sample:
    """One run through hyperrun's run path, timed."""
    recorder = Recorder()
    recorder("start", None)
    status = container.run(_spec(bench), store, bench.uri, pull=_never_pull, terminal=None,
                           timeline=recorder)
    recorder("returned", None)
    if status != 0:
        raise BenchFailed(f"`run --rm {bench.image} true` exited with status {status}",
                          hint="see `hyperrun run --rm IMAGE true` on its own")
    return build(recorder.raw())


def _worker_boot(bench: BootBench, root: str) -> Sample | str:
    """one_boot in a worker process; an error comes back as its message (picklable)."""
    try:
        return one_boot(bench, Store(Path(root)))
    except HyperrunError as exc:
        return exc.message


def measure_serial(bench: BootBench, store: Store, count: int, stage: str,
                    progress: Progress, watcher: GoneWatcher) -> list[Sample]:
    """Runs one at a time, each once the VM before it is gone: a VM being torn down
    slows libvirt for the next run (--parallel is for measuring under load)."""
    samples = []
    progress(stage, 0, count)
    for i in range(count):
        warm.refilled(bench, store)
        sample = one_boot(bench, store)
        watcher.watch(sample.domain_uuid)
        watcher.wait(GONE_TIMEOUT)
        samples.append(sample)
        progress(stage, i + 1, count)
    return samples


def _measure_pool(pool: concurrent.futures.Executor, bench: BootBench, store: Store,
                  count: int, stage: str, progress: Progress,
                  watcher: GoneWatcher) -> list[Sample]:
    samples = []
    progress(stage, 0, count)
    futures = [pool.submit(_worker_boot, bench, str(store.root)) for _ in range(count)]
    for future in concurrent.futures.as_completed(futures):
        result = future.result()
        if isinstance(result, str):
            for f in futures:
                f.cancel()
            raise BenchFailed(result)
        watcher.watch(result.domain_uuid)
        samples.append(result)
        progress(stage, len(samples), count)
    return samples


def cli_wall(bench: BootBench, store: Store) -> float:
    """The wall time of the same run as a `hyperrun run --rm` command line."""
    argv = [*isolated_python("hyperrun.cli"), "run", "--rm", "-q", "--pull", "never",
            "--cpus", str(bench.cpus), "--memory", f"{bench.memory_mib}m",
            "--accel", str(bench.accel), "--connect", bench.uri, bench.image, *COMMAND]
    start = time.monotonic()
    # Ourselves, with this environment (HYPERRUN_ROOT), not an external tool: so not
    # subproc.run, which gives children a fixed environment. Isolated and in "/", as root
    # must never import a `hyperrun/` planted in the caller's directory.
    proc = subprocess.run(argv, capture_output=True, timeout=CLI_TIMEOUT, check=False,
                          cwd="/", env={**os.environ, "HYPERRUN_ROOT": str(store.root)})
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise BenchFailed(f"`hyperrun run --rm {bench.image} true` exited with status "
                          f"{proc.returncode}")
    return elapsed


def run(bench: BootBench, store: Store, progress: Progress) -> dict[str, Any]:
    """Warm up, measure, wait for the measured VMs to go; the report (bench/report.py)."""
    images = ImageStore(store)
    image = images.get(bench.image)  # ImageNotFound, with its hint, before anything boots
    env = environment.collect(store, bench.uri, requested=bench.accel, vcpus=bench.cpus,
                              memory_mib=bench.memory_mib, image=bench.image)
    env["image_id"] = image.id
    images.base_disk(image)  # built once, before any timed run
    with warm.pool_for(bench, store, image.id), GoneWatcher(bench.uri) as watcher:
        if bench.parallel == 1:
            measure_serial(bench, store, bench.warmup, "warmup", progress, watcher)
            samples = measure_serial(bench, store, bench.runs, "measure", progress, watcher)
            # The time spent in runs; not the waits for each VM to go between them.
            wall = sum(s.total for s in samples)
        else:
            # A worker imports the run path when its first task arrives, before that
            # task's clock starts.
            with worker_pool(bench.parallel) as pool:
                _measure_pool(pool, bench, store, bench.warmup, "warmup", progress, watcher)
                watcher.wait(GONE_TIMEOUT)
                start = time.monotonic()
                samples = _measure_pool(pool, bench, store, bench.runs, "measure", progress,
                                        watcher)
                wall = time.monotonic() - start
        progress("teardown", 0, 1)
        watcher.wait(GONE_TIMEOUT)
        samples = [dataclasses.replace(s, vm_gone=_gone(watcher, s)) for s in samples]
        cli = _measure_cli(bench, store, progress, watcher)
    return report.make(bench_settings(bench), env, samples, wall, cli)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """Spawned worker processes, started in "/".

    A spawned worker is `python -c ...` in our working directory, which Python puts first
    on sys.path before it imports multiprocessing: as root, a `multiprocessing/` planted
    in the caller's directory would run. Our own paths are all absolute (Store.default).
    """
    context = multiprocessing.get_context("spawn")
    with contextlib.chdir("/"), concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context) as pool:
        yield pool


def _measure_cli(bench: BootBench, store: Store, progress: Progress,
                 watcher: GoneWatcher) -> list[float]:
    """cli_wall, bench.cli_runs times, each once the VM of the one before is gone."""
    prefix = f"hyperrun-{store.identity()}-"
    walls = []
    progress("cli", 0, bench.cli_runs)
    for i in range(bench.cli_runs):
        warm.refilled(bench, store)
        before = watcher.listed(prefix)
        walls.append(cli_wall(bench, store))
        for uuid in watcher.listed(prefix) - before:
            watcher.watch(uuid)
        watcher.wait(GONE_TIMEOUT)
        progress("cli", i + 1, bench.cli_runs)
    return walls


def _gone(watcher: GoneWatcher, s: Sample) -> float | None:
    at = watcher.gone_at(s.domain_uuid)
    return None if at is None else max(0.0, at - s.exit_reported)


def bench_settings(bench: BootBench) -> dict[str, Any]:
    return {"image": bench.image, "command": ["run", "--rm", bench.image, *COMMAND],
            "runs": bench.runs, "warmup": bench.warmup, "parallel": bench.parallel,
            "cpus": bench.cpus, "memory_mib": bench.memory_mib, "accel": str(bench.accel),
            "warm": bench.warm}
