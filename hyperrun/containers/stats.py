"""`stats`: what running containers use, from two libvirt samples of their domains."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from hyperrun.containers import lifecycle, records, status
from hyperrun.containers.records import Container
from hyperrun.store import Store
from hyperrun.vm import stats as vm_stats
from hyperrun.vm.stats import Sample


@dataclass(frozen=True)
class Usage:
    container: Container
    running: bool  # False: a stopped container named on the command line; all zeros
    cpu_percent: float = 0.0
    memory: int = 0  # bytes: the host memory its QEMU holds
    memory_limit: int = 0  # bytes: the guest's memory (--memory)
    read: int = 0
    written: int = 0


def chosen(conn: libvirt.virConnect, store: Store, refs: list[str]) -> list[Container]:
    """The named containers (ContainerNotFound for an unknown one), or every running one."""
    if refs:
        return [records.find(store, ref) for ref in refs]
    return [s.container for s in status.all_statuses(conn, store) if s.running]


class Meter:
    """Keeps each domain's last sample, so every reading covers the time since the last."""

    def __init__(self, conn: libvirt.virConnect, store: Store,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.conn, self.store, self.sleep = conn, store, sleep
        self.last: dict[str, Sample] = {}

    def read(self, containers: list[Container], interval: float) -> list[Usage]:
        """Usage of containers; one not sampled before is sampled twice, interval apart."""
        doms, current = {}, []
        for c in containers:
            now, state = lifecycle.refresh(self.conn, self.store, c)
            current.append(now)  # as its record says now: it may have been renamed
            if state in (lifecycle.State.UP, lifecycle.State.PAUSED):
                dom = lifecycle.domain(self.conn, self.store, now)
                if dom is not None:
                    doms[c.id] = dom
        if any(d.UUIDString() not in self.last for d in doms.values()):
            self.last.update(vm_stats.sample(self.conn, list(doms.values())))
            self.sleep(interval)
        after = vm_stats.sample(self.conn, list(doms.values()))
        out = []
        for c in current:
            dom = doms.get(c.id)
            sample = after.get(dom.UUIDString()) if dom is not None else None
            before = self.last.get(dom.UUIDString()) if dom is not None else None
            if sample is None:
                out.append(Usage(c, running=False))
                continue
            out.append(Usage(
                c, True, vm_stats.cpu_percent(before, sample) if before else 0.0,
                sample.memory, c.settings.memory_mib << 20, sample.read, sample.written))
        self.last = after
        return out
