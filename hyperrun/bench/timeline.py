"""One run's timeline: host stamps, the guest's stamps mapped onto the host clock, phases.

Every stamp is the host's CLOCK_MONOTONIC in seconds (the same in every process, so
parallel workers' stamps compare). The guest's stamps (`vm/stamps.py`) count from where
the guest kernel started its clock; they are mapped through the two request/reply pairs
that carry them. The host sends a request at s (its clock); the agent takes it at guest
time q, answers at guest time g, and the host receives the answer at r. Then the host
time of q is at least s and that of g at most r, so host = guest + offset with offset in
[s - q, r - g]: the round trip less the guest's own time on it. CONTAINER -> OK and
EXEC -> STARTED each give such an interval (the first is wide: the host sends CONTAINER
as soon as the domain exists, long before the agent runs); the offset lies in both. We
take the upper end (delivery from the guest to the host is the short leg) and report the
width of the intersection as the mapping error: no mapped stamp is off by more, as long
as the guest's clock runs at the host's rate between the two replies.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperrun.containers.status import qemu_pid
from hyperrun.vm.protocol import Message
from hyperrun.vm.stamps import GuestStamps, StampError, parse

NS = 1e9

# The milestones of a run in the order they happen, each with what ends the phase named
# after it (the phase runs from the previous milestone). createXML returns after libvirt
# has started QEMU (paused), probed it and resumed it, so "QEMU process running" comes
# before "domain created".
MILESTONES: tuple[tuple[str, str], ...] = (
    ("image_overlay_ready", "image resolved, base disk and the container's overlay ready"),
    ("qemu_running", "libvirt has started the QEMU process"),
    ("domain_created", "createXML returned: QEMU probed by libvirt and its vCPUs resumed"),
    ("kernel_entered", "guest time 0: the decompressed kernel starts its clock (roughly: "
                       "ticks, not the TSC, until ~0.3 s in)"),
    ("agent_started", "the agent (PID 1) entered main()"),
    ("root_mounted", "the container's root disk is mounted in the guest"),
    ("process_execd", "the container's process passed execve"),
    ("exit_reported", "the host has the process's EXIT and every end of its output"),
    ("run_returned", "run() returned: exit handled, the reaper started"),
)
PHASES = tuple(name for name, _ in MILESTONES)
GUEST_PHASES = ("kernel_entered", "agent_started", "root_mounted", "process_execd",
                "exit_reported")
# After the total: from exit_reported until libvirt no longer lists the domain.
TEARDOWN = "vm_gone"
TEARDOWN_TEXT = "libvirt no longer lists the domain (counted from exit_reported; not in the total)"
# The host events hyperrun's run path reports (containers.boot.Timeline) and the bench's own.
# A warm run (its VM came from a pool, containers/pool.py) reports "warm"; these
# milestones then passed before the run began, and its phases leave them out.
BOOTED_AHEAD = ("qemu_running", "domain_created", "kernel_entered", "agent_started")
HOST_EVENTS = ("start", "overlay", "created", "container_sent", "ok", "exec_sent", "started",
               "exit", "returned")


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_start(pid: int, proc: Path = Path("/proc")) -> float | None:
    """When process pid started, on the monotonic clock (to a clock tick, 10 ms here)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    since_boot = int(fields[19]) / _clock_ticks()  # starttime, on CLOCK_BOOTTIME
    return since_boot - (time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic())


@dataclass
class Recorder:
    """The containers.boot.Timeline of one benchmarked run: keeps stamps and replies."""

    clock: Callable[[], float] = time.monotonic
    host: dict[str, float] = field(default_factory=dict)
    replies: dict[str, Message] = field(default_factory=dict)
    domain_uuid: str = ""
    qemu_start: float | None = None

    def __call__(self, event: str, detail: Any) -> None:
        self.host[event] = self.clock()
        if isinstance(detail, Message):
            self.replies[event] = detail
        elif event == "created":
            self.domain_uuid = detail.UUIDString()
            pid = qemu_pid(detail.name())
            self.qemu_start = process_start(pid) if pid else None

    def raw(self) -> RawRun:
        return RawRun(dict(self.host), dict(self.replies), self.domain_uuid, self.qemu_start)


@dataclass(frozen=True)
class RawRun:
    """What one run recorded, picklable (parallel runs happen in worker processes)."""

    host: dict[str, float]
    replies: dict[str, Message]
    domain_uuid: str
    qemu_start: float | None


@dataclass(frozen=True)
class Mapping:
    offset: float  # host time = guest seconds + offset
    error: float  # the most any mapped stamp can be off by


def map_clock(host: dict[str, float], g: GuestStamps) -> Mapping:
    """Where the guest's clock sits on the host's, from the two replies that carry it."""
    pairs = ((host["container_sent"], g.ok_request, g.ok_sent, host["ok"]),
             (host["exec_sent"], g.started_request, g.started_sent, host["started"]))
    low = max(sent - taken / NS for sent, taken, _, _ in pairs)
    high = min(received - answered / NS for _, _, answered, received in pairs)
    if low > high + 1e-6:
        raise StampError("the guest's clock disagrees with the host's (the replies' "
                         "intervals do not overlap)")
    return Mapping(high, max(0.0, high - low))


def _handshake(h: dict[str, float]) -> dict[str, float | None]:
    """The host's side of the two round trips: not phases, but where a gap may lie."""
    return {"host_sent_container": h["container_sent"], "host_received_ok": h["ok"],
            "host_sent_exec": h["exec_sent"], "host_received_started": h["started"]}


@dataclass(frozen=True)
class Sample:
    """One measured run: its total, its phases (None: unknown for this run), and how sure."""

    total: float
    phases: dict[str, float | None]
    exit_reported: float  # host monotonic time: vm_gone counts from here
    domain_uuid: str
    container_round_trip: float
    mapping_error: float | None
    milestones: dict[str, float | None] = field(default_factory=dict)  # as measured, from start
    guest_dropped: str | None = None  # why this run's guest stamps were not used
    overlapped: int = 0  # milestones reached before the one preceding them (see build)
    vm_gone: float | None = None


def build(raw: RawRun) -> Sample:
    """The phases of one run, on its critical path: a phase lasts from the time the
    previous milestone was reached until this one was, or 0 when this one came first.
    That happens when work overlaps (libvirt resumes the vCPUs before createXML returns,
    so on a loaded host the guest may boot before the host hears of its domain), within
    the mapping error, or as QEMU's start is known only to a clock tick; `overlapped`
    counts it. So the phases of a run always add up to its total."""
    h = raw.host
    missing = [e for e in HOST_EVENTS if e not in h]
    if missing:
        raise ValueError(f"the run did not report {', '.join(missing)}")
    guest: dict[str, float] | None = None
    dropped = error = None
    try:
        stamps = parse(raw.replies["ok"], raw.replies["started"])
        mapping = map_clock(h, stamps)
        guest = {"kernel_entered": mapping.offset,
                 "agent_started": mapping.offset + stamps.agent / NS,
                 "root_mounted": mapping.offset + stamps.mounted / NS,
                 "process_execd": mapping.offset + stamps.exec / NS}
        error = mapping.error
        # Not kernel_entered: until its TSC clocksource is up (~0.3 s in, under TCG) the
        # guest keeps time by timer ticks, so guest time 0 maps only roughly, and may map
        # before the run on a loaded host. The agent's stamps are read on the TSC.
        if guest["agent_started"] < h["start"] and "warm" not in h:
            raise StampError("the guest claims its agent started before the run began")
    except (StampError, KeyError) as exc:
        guest, dropped = None, str(exc) if isinstance(exc, StampError) else "no guest reply"
    raw_times: dict[str, float | None] = {
        "image_overlay_ready": h["overlay"], "qemu_running": raw.qemu_start,
        "domain_created": h["created"], **dict.fromkeys(GUEST_PHASES[:-1], None),
        **(guest or {}), "exit_reported": h["exit"], "run_returned": h["returned"]}
    if "warm" in h:  # claimed, not booted: the claim ends with "overlay"
        raw_times.update(dict.fromkeys(BOOTED_AHEAD, h["overlay"]))
    phases: dict[str, float | None] = {}
    previous, overlapped, unknown = h["start"], 0, False
    for name in PHASES:
        t = raw_times[name]
        if t is None:
            phases[name], unknown = None, True
            continue
        if t < previous:
            t, overlapped = previous, overlapped + 1
        # The phase after an unknown milestone spans two phases: unknown too.
        phases[name] = None if unknown else t - previous
        previous, unknown = t, False
    return Sample(total=h["returned"] - h["start"], phases=phases, exit_reported=h["exit"],
                  domain_uuid=raw.domain_uuid,
                  milestones={k: None if v is None else v - h["start"]
                              for k, v in {**raw_times, **_handshake(h)}.items()},
                  container_round_trip=h["ok"] - h["container_sent"], mapping_error=error,
                  guest_dropped=dropped, overlapped=overlapped)
