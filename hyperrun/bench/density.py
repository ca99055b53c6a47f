"""`hyperrun bench density`: how many idle containers fit, and what each one costs.

Idle containers are started one after another up to --count (stopping early when one
fails to start or the host's MemAvailable falls below a floor). After they have settled,
each one's QEMU and monitor are measured: RSS, PSS (shared pages split among the QEMUs:
what one more container costs), QEMU's guest RAM and TCG code buffer, the guest's own use
(MemTotal - MemAvailable of its /proc/meminfo) and the overhead, (QEMU + monitor) - guest.
Then every one must still answer `exec true`; then all are removed.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hyperrun.bench import environment, procmem
from hyperrun.bench.fleet import HYPERRUN, Fleet, FleetError, timed
from hyperrun.bench.stats import summary
from hyperrun.containers import records
from hyperrun.images.store import ImageStore
from hyperrun.spec import Accel
from hyperrun.store import Store

MIN_AVAILABLE = 2 << 30  # stop starting containers below this host MemAvailable
MEASURED = ("qemu_rss", "qemu_pss", "qemu_guest_ram_resident", "qemu_tb_cache_resident",
            "monitor_rss", "monitor_pss", "guest_used", "overhead", "overhead_pss")
MAX_MEMINFO = 16 << 10

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DensityBench:
    count: int
    image: str = "busybox"
    memory_mib: int = 128
    cpus: int = 1
    settle: float = 15.0  # seconds between the last start and the measurements
    uri: str = "qemu:///system"


def measure_one(fleet: Fleet, store: Store, cid: str, memory_mib: int) -> dict[str, Any]:
    """Host memory of one running container and the guest's own use."""
    qemu_pid = int(fleet.hyperrun("inspect", "-f", "{{.State.Pid}}", cid).stdout)
    monitor_pid = records.find(store, cid).monitor_pid
    qemu, mon = procmem.status(qemu_pid), procmem.status(monitor_pid)
    guest_ram, code = procmem.qemu_split(qemu_pid, memory_mib << 20)
    text = fleet.hyperrun("exec", cid, "cat", "/proc/meminfo").stdout
    # The guest is untrusted: a bounded read, and only lines of the expected shape count.
    guest = procmem.kib_fields(text[:MAX_MEMINFO])
    used = guest["MemTotal"] - guest["MemAvailable"]
    qemu_pss, monitor_pss = procmem.pss(qemu_pid), procmem.pss(monitor_pid)
    return {"id": cid, "qemu_pid": qemu_pid, "monitor_pid": monitor_pid,
            "qemu_rss": qemu["VmRSS"], "qemu_pss": qemu_pss,
            "qemu_guest_ram_resident": guest_ram, "qemu_tb_cache_resident": code,
            "monitor_rss": mon["VmRSS"], "monitor_pss": monitor_pss,
            "guest_mem_total": guest["MemTotal"], "guest_used": used,
            "overhead": qemu["VmRSS"] + mon["VmRSS"] - used,
            "overhead_pss": qemu_pss + monitor_pss - used}


def run(bench: DensityBench, store: Store, progress: Progress) -> dict[str, Any]:
    """Start, settle, measure, check and remove the containers: the report."""
    ImageStore(store).get(bench.image)
    env = environment.collect(store, bench.uri, requested=Accel.AUTO, vcpus=bench.cpus,
                              memory_mib=bench.memory_mib, image=bench.image)
    result: dict[str, Any] = {
        "schema": 1, "benchmark": "density", "units": "seconds and bytes",
        "settings": {"image": bench.image, "count": bench.count, "cpus": bench.cpus,
                     "memory_mib": bench.memory_mib, "settle": bench.settle,
                     "min_available": MIN_AVAILABLE},
        "environment": env, "host_available_before": procmem.host_available(),
        "loadavg_before": procmem.loadavg(), "stopped_because": None}
    with Fleet(store).cleanup() as fleet:
        ids, starts = _start_all(fleet, bench, result, progress)
        progress("settle", 0, 1)
        time.sleep(bench.settle)
        progress("settle", 1, 1)
        result["host_available_settled"] = procmem.host_available()
        result["loadavg_settled"] = procmem.loadavg()
        result["running"] = len(fleet.ids(running_only=True))
        containers: list[dict[str, Any]] = []
        progress("measure", 0, len(ids))
        for i, cid in enumerate(ids):
            try:
                containers.append(measure_one(fleet, store, cid, bench.memory_mib))
            except (FleetError, OSError, ValueError, KeyError) as exc:
                containers.append({"id": cid, "error": str(exc)[:300]})
            progress("measure", i + 1, len(ids))
        answers = []
        progress("check", 0, len(containers))
        for i, entry in enumerate(containers):
            elapsed, status = timed(store, [*HYPERRUN, "exec", entry["id"], "true"])
            entry["exec_true"] = {"status": status, "time": elapsed}
            if status == 0:
                answers.append(elapsed)
            progress("check", i + 1, len(containers))
        progress("remove", 0, 1)
    result.update(started=len(ids), start_time=summary(starts), answering=len(answers),
                  exec_under_load=summary(answers), containers=containers,
                  host_available_after=procmem.host_available(),
                  loadavg_after=procmem.loadavg())
    result["memory"] = {key: summary([e[key] for e in containers if e.get(key) is not None])
                        for key in MEASURED}
    return result


def _start_all(fleet: Fleet, bench: DensityBench, result: dict[str, Any],
               progress: Progress) -> tuple[list[str], list[float]]:
    ids: list[str] = []
    starts: list[float] = []
    progress("start", 0, bench.count)
    for i in range(bench.count):
        available = procmem.host_available()
        if available < MIN_AVAILABLE:
            result["stopped_because"] = (f"host MemAvailable {available >> 20} MiB is below "
                                         f"{MIN_AVAILABLE >> 20} MiB")
            break
        t0 = time.monotonic()
        try:
            ids.append(fleet.start(f"d{i}", memory_mib=bench.memory_mib, cpus=bench.cpus,
                                   image=bench.image))
        except (FleetError, subprocess.TimeoutExpired) as exc:
            result["stopped_because"] = f"start {i + 1} failed: {str(exc)[:300]}"
            break
        starts.append(time.monotonic() - t0)
        progress("start", i + 1, bench.count)
    return ids, starts
