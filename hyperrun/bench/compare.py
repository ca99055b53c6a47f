"""`hyperrun compare`: the same probes from the same image on the host, in a runc
namespace container and in a hyperrun microVM, with the same CPU and memory limits.

The host column runs the image's own busybox (from the bundle's rootfs) as a plain host
process and runs only the read-only probes: the module load and the allocation past the
limit are reported as skipped, with the reason. What each column measured goes into
`raw`; compare_rows.py turns it into the table's values and verdicts.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperrun import subproc
from hyperrun.bench import boot, compare_rows, density, environment, procmem, runc
from hyperrun.bench.fleet import Fleet
from hyperrun.bench.probes import (
    MODULE_KEYS,
    MODULE_SCRIPT,
    OOM_KEYS,
    READ_KEYS,
    READ_SCRIPT,
    oom_script,
    parse,
)
from hyperrun.bench.stats import summary
from hyperrun.bench.teardown import GoneWatcher
from hyperrun.containers import records
from hyperrun.errors import HyperrunError
from hyperrun.images.store import ImageStore
from hyperrun.spec import Accel
from hyperrun.store import Store

COLUMNS = ("host", "runc", "microvm")
HOST_IDLE_SECONDS = "30"
KILLED = "Killed process"

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CompareBench:
    image: str = "busybox"
    runs: int = 5
    cpus: int = 1
    memory_mib: int = 128
    uri: str = "qemu:///system"


def host_oom_lines() -> list[str]:
    """The host kernel's log lines about OOM kills (reading it changes nothing)."""
    try:
        text = subproc.run(["dmesg"]).stdout.decode(errors="replace")
    except HyperrunError:
        return []
    return [line[:200] for line in text.splitlines() if KILLED in line]


def _new_lines(before: list[str], after: list[str]) -> list[str]:
    """The lines of after that before did not have (the kernel's ring buffer may also
    have dropped old ones meanwhile)."""
    seen = set(before)
    return [line for line in after if line not in seen]


def _host_bin(b: runc.Bundles) -> Path:
    """A directory of applet links to the image's busybox, to be the host column's PATH."""
    busybox = b.rootfs / "bin" / "busybox"
    links = b.dir / "hostbin"
    links.mkdir()
    names = subproc.run([str(busybox), "--list"]).stdout.decode().split()
    for name in names:
        if name and "/" not in name and not name.startswith((".", "[")):
            (links / name).symlink_to(busybox)
    return links


def host_column(b: runc.Bundles, runs: int) -> tuple[dict[str, Any], list[float]]:
    busybox = str(b.rootfs / "bin" / "busybox")
    path = f"PATH={_host_bin(b)}"
    out = subproc.run(["env", path, busybox, "sh", "-c", READ_SCRIPT]).stdout
    raw: dict[str, Any] = parse(out.decode(errors="replace"), READ_KEYS)
    times = []
    for _ in range(runs):
        start = time.monotonic()
        subproc.run([busybox, "true"])
        times.append(time.monotonic() - start)
    # An idle process of the image's busybox, for what one more "instance" costs. Started
    # with Popen, as subproc gives no pid back; with subproc's fixed environment.
    idle = subprocess.Popen([busybox, "sleep", HOST_IDLE_SECONDS], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=subproc.environment(), cwd="/")
    try:
        time.sleep(0.2)
        raw["memory_pss"] = procmem.pss(idle.pid)
        raw["memory_rss"] = procmem.status(idle.pid)["VmRSS"]
    finally:
        idle.kill()
        idle.wait()
    raw["disk"] = 0
    return raw, times


def runc_column(b: runc.Bundles, bench: CompareBench,
                progress: Progress) -> tuple[dict[str, Any], list[float]]:
    progress("runc start-up", 0, bench.runs)
    times = []
    for i in range(bench.runs):
        times.append(b.run(f"true{i}", ["true"]))
        progress("runc start-up", i + 1, bench.runs)
    progress("runc probes", 0, 1)
    with b.detached("idle", ["sleep", "2147483647"]) as cid:
        raw: dict[str, Any] = parse(b.exec(cid, READ_SCRIPT), READ_KEYS)
        raw.update(parse(b.exec(cid, MODULE_SCRIPT), MODULE_KEYS))
        pids = b.pids(cid)
        raw["memory_pss"] = sum(procmem.pss(p) for p in pids)
        raw["memory_rss"] = sum(procmem.status(p)["VmRSS"] for p in pids)
        cgroup = b.memory_cgroup(cid)
        raw["cgroup_usage"] = int((cgroup / "memory.usage_in_bytes").read_text())
        raw["disk"] = procmem.allocated(b.dir / "idle") + procmem.allocated(b.state / cid)
        before = host_oom_lines()
        raw.update(parse(b.exec(cid, oom_script(bench.memory_mib)), OOM_KEYS))
        raw["host_oom_lines"] = _new_lines(before, host_oom_lines())
        control = (cgroup / "memory.oom_control").read_text().split()
        raw["cgroup_oom_kills"] = dict(zip(control[::2], control[1::2],
                                           strict=False)).get("oom_kill")
        raw["alive_after_oom"] = bool(b.pids(cid))
    progress("runc probes", 1, 1)
    return raw, times


def vm_column(store: Store, bench: CompareBench,
              progress: Progress) -> tuple[dict[str, Any], list[float]]:
    boots = boot.BootBench(image=bench.image, runs=bench.runs, warmup=0, cpus=bench.cpus,
                           memory_mib=bench.memory_mib, uri=bench.uri)
    with GoneWatcher(bench.uri) as watcher:
        samples = boot.measure_serial(boots, store, bench.runs, "microVM start-up", progress,
                                      watcher)
    progress("microVM probes", 0, 1)
    with Fleet(store, "compare").cleanup() as fleet:
        cid = fleet.start("idle", memory_mib=bench.memory_mib, cpus=bench.cpus,
                          image=bench.image)

        def inside(script: str) -> str:
            return fleet.hyperrun("exec", cid, "sh", "-c", script).stdout

        raw: dict[str, Any] = parse(inside(READ_SCRIPT), READ_KEYS)
        raw.update(parse(inside(MODULE_SCRIPT), MODULE_KEYS))
        mem = density.measure_one(fleet, store, cid, bench.memory_mib)
        raw["memory_pss"] = mem["qemu_pss"] + mem["monitor_pss"]
        raw["memory_rss"] = mem["qemu_rss"] + mem["monitor_rss"]
        raw["qemu_rss"] = mem["qemu_rss"]
        raw["guest_used"] = mem["guest_used"]
        raw["disk"] = procmem.allocated(records.paths(store, cid).dir)
        before = host_oom_lines()
        raw.update(parse(inside(oom_script(bench.memory_mib)), OOM_KEYS))
        raw["host_oom_lines"] = _new_lines(before, host_oom_lines())
        raw["alive_after_oom"] = cid in fleet.ids(running_only=True)
        raw["qemu_rss_after_oom"] = procmem.status(mem["qemu_pid"])["VmRSS"]
    progress("microVM probes", 1, 1)
    return raw, [s.total for s in samples]


def run(bench: CompareBench, store: Store, progress: Progress) -> dict[str, Any]:
    """Measure the three columns; the report with its rows and verdicts."""
    image = ImageStore(store).get(bench.image)
    env = environment.collect(store, bench.uri, requested=Accel.AUTO, vcpus=bench.cpus,
                              memory_mib=bench.memory_mib, image=bench.image)
    env["runc_version"] = runc.available()
    env["loadavg_before"] = procmem.loadavg()
    raw: dict[str, dict[str, Any]] = {}
    startup: dict[str, list[float]] = {}
    with runc.bundles(store, image, cpus=bench.cpus, memory_mib=bench.memory_mib) as b:
        progress("host", 0, 1)
        raw["host"], startup["host"] = host_column(b, bench.runs)
        progress("host", 1, 1)
        raw["runc"], startup["runc"] = runc_column(b, bench, progress)
    raw["microvm"], startup["microvm"] = vm_column(store, bench, progress)
    env["loadavg_after"] = procmem.loadavg()
    for column in COLUMNS:
        raw[column]["startup_median"] = statistics.median(startup[column])
    return {
        "schema": 1, "benchmark": "compare",
        "settings": {"image": bench.image, "runs": bench.runs, "cpus": bench.cpus,
                     "memory_mib": bench.memory_mib},
        "environment": env,
        "columns": list(COLUMNS),
        "column_descriptions": compare_rows.COLUMN_TEXT,
        "startup": {c: summary(startup[c]) for c in COLUMNS},
        "rows": compare_rows.rows(raw, bench.memory_mib),
        "raw": raw,
    }
