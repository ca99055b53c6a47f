"""What libvirt measures of running domains, for `stats`: CPU time, memory, disk I/O."""

from __future__ import annotations

import time
from dataclasses import dataclass

import libvirt

from hyperrun.log import log

_GROUPS = (libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
           | libvirt.VIR_DOMAIN_STATS_BLOCK)


@dataclass(frozen=True)
class Sample:
    """One domain at one moment."""

    taken: float  # time.monotonic() when libvirt answered
    cpu_ns: int  # CPU time of the whole QEMU process (vCPUs, emulator, I/O threads)
    memory: int  # bytes of host memory QEMU holds (its RSS), what the VM really costs
    read: int  # bytes read from / written to the container's disks since boot
    written: int


def _int(stats: dict[str, object], key: str) -> int:
    value = stats.get(key, 0)
    return value if isinstance(value, int) and value >= 0 else 0


def sample(conn: libvirt.virConnect, doms: list[libvirt.virDomain]) -> dict[str, Sample]:
    """Samples of doms by UUID, all from one libvirt call; a domain that ended is absent.

    libvirt's balloon group reports `balloon.rss`, read from QEMU's /proc entry (with or
    without a balloon device): the guest's memory as far as the host has paid for it,
    plus QEMU's own (the TCG translation cache above all).
    """
    if not doms:
        return {}
    try:
        found = conn.domainListGetStats(doms, _GROUPS)
    except libvirt.libvirtError as exc:  # a domain that vanished between look-up and call
        log.debug("domain statistics: %s", exc.get_error_message())
        found = []
        for dom in doms:
            try:
                found += conn.domainListGetStats([dom], _GROUPS)
            except libvirt.libvirtError:
                continue
    taken = time.monotonic()
    out = {}
    for dom, stats in found:
        disks = range(_int(stats, "block.count"))
        out[dom.UUIDString()] = Sample(
            taken, _int(stats, "cpu.time"), _int(stats, "balloon.rss") * 1024,
            sum(_int(stats, f"block.{i}.rd.bytes") for i in disks),
            sum(_int(stats, f"block.{i}.wr.bytes") for i in disks))
    return out


def cpu_percent(before: Sample, after: Sample) -> float:
    """As docker: CPU time used over wall time passed, so one busy host core is 100%."""
    wall = after.taken - before.taken
    if wall <= 0 or after.cpu_ns < before.cpu_ns:
        return 0.0
    return (after.cpu_ns - before.cpu_ns) / (wall * 1e9) * 100.0
