"""`hyperrun bench exec`: how long `exec C true` takes into a running container.

One detached idle container; after warm-up rounds, each round times, in turn: the exec
done in this process through the container's monitor (the RPC alone), `hyperrun exec C
true` as a command line, `python3 -c pass` and `hyperrun --version` (what any command
costs before its first RPC). Interleaving them makes all four see the same machine load.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hyperrun.bench import environment
from hyperrun.bench.fleet import HYPERRUN, Fleet, timed
from hyperrun.bench.stats import summary
from hyperrun.containers import records
from hyperrun.containers.exec import exec_spec
from hyperrun.images.store import ImageStore
from hyperrun.spec import Accel
from hyperrun.store import Store
from hyperrun.vm import monitor

EXEC_ID_RANGE = 1 << 30  # as containers/exec.py picks process ids
KINDS = ("rpc", "cli", "python", "version")
DESCRIPTIONS = {"rpc": "exec true through the monitor, in-process (the RPC alone)",
                "cli": "`hyperrun exec C true`, a command line",
                "python": "`python3 -c pass` (interpreter start-up)",
                "version": "`hyperrun --version` (hyperrun's start-up)"}

Progress = Callable[[str, int, int], None]
Probe = Callable[[], tuple[float, int]]


@dataclass(frozen=True)
class ExecBench:
    image: str = "busybox"
    runs: int = 20
    warmup: int = 3
    cpus: int = 1
    memory_mib: int = 128
    uri: str = "qemu:///system"


def rpc_exec(store: Store, container_id: str) -> Probe:
    """`exec C true` done in this process through the container's monitor."""
    c = records.find(store, container_id)
    listen = records.paths(store, c.id).mon_socket
    spec = exec_spec(c, ("true",), (), None, None, False, False)

    def alive() -> bool:
        return monitor.alive(c.monitor_pid, listen)

    def once() -> tuple[float, int]:
        pid = 2 + secrets.randbelow(EXEC_ID_RANGE - 2)
        start = time.monotonic()
        with monitor.session(listen) as guest:
            guest.start(pid, spec, None, main=False, alive=alive)
            status = guest.pump(pid, tty=False, stdin_fd=None)
        return time.monotonic() - start, status

    return once


def cli_exec(store: Store, container_id: str) -> Probe:
    return lambda: timed(store, [*HYPERRUN, "exec", container_id, "true"])


def measure(store: Store, container_id: str, runs: int, warmup: int,
            progress: Progress) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Samples (seconds) and failure counts of every kind, over warmup + runs rounds."""
    probes: dict[str, Probe] = {
        "rpc": rpc_exec(store, container_id),
        "cli": cli_exec(store, container_id),
        "python": lambda: timed(store, [sys.executable, "-c", "pass"]),
        "version": lambda: timed(store, [*HYPERRUN, "--version"]),
    }
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    failures = dict.fromkeys(KINDS, 0)
    progress("warmup", 0, warmup)
    for i in range(warmup + runs):
        if i == warmup:
            progress("measure", 0, runs)
        for kind in KINDS:
            elapsed, status = probes[kind]()
            if i < warmup:
                continue
            if status != 0:
                failures[kind] += 1
            else:
                times[kind].append(elapsed)
        if i < warmup:
            progress("warmup", i + 1, warmup)
        else:
            progress("measure", i + 1 - warmup, runs)
    return times, failures


def run(bench: ExecBench, store: Store, progress: Progress) -> dict[str, Any]:
    """Start a container, time execs into it, remove it: the report."""
    ImageStore(store).get(bench.image)  # ImageNotFound, with its hint, before anything boots
    env = environment.collect(store, bench.uri, requested=Accel.AUTO, vcpus=bench.cpus,
                              memory_mib=bench.memory_mib, image=bench.image)
    with Fleet(store).cleanup() as fleet:
        progress("start", 0, 1)
        cid = fleet.start("exec", memory_mib=bench.memory_mib, cpus=bench.cpus,
                          image=bench.image)
        progress("start", 1, 1)
        times, failures = measure(store, cid, bench.runs, bench.warmup, progress)
    return {
        "schema": 1, "benchmark": "exec", "units": "seconds",
        "settings": {"image": bench.image, "runs": bench.runs, "warmup": bench.warmup,
                     "cpus": bench.cpus, "memory_mib": bench.memory_mib,
                     "command": ["exec", "CONTAINER", "true"]},
        "environment": env,
        "kinds": list(KINDS), "descriptions": DESCRIPTIONS,
        "latency": {k: summary(times[k]) for k in KINDS},
        "failures": failures,
        "samples": times,
    }
