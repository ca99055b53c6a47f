"""The guest's boot stamps in OK and STARTED (docs/protocol.md "Boot stamps").

The agent reports when it started, mounted the root and saw the main process's execve
succeed, in nanoseconds of the guest's CLOCK_BOOTTIME, and, for each reply, its clock when
it took the request and when it sent the reply. They serve `hyperrun bench boot` only,
so a bad stamp never fails a run: it is refused here with a reason (StampError), and the
benchmark drops that run's guest phases.
The guest is untrusted: numbers are ASCII digits of bounded length, and the stamps must
be in the order the agent takes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperrun.vm.protocol import Message, Msg, shorten

# A guest clock past this is absurd for a boot (a year, in ns); it also bounds the digits.
NS_MAX = 365 * 24 * 3600 * 10**9
NS_DIGITS = len(str(NS_MAX))


class StampError(ValueError):
    """The guest's stamps are missing, malformed or out of order."""


@dataclass(frozen=True)
class GuestStamps:
    """Guest clock readings (ns since the guest kernel started counting)."""

    agent: int  # the agent's main() began
    ok_request: int  # the agent took CONTAINER
    mounted: int  # the container's root disk was mounted
    ok_sent: int  # OK was sent
    started_request: int  # the agent took the main EXEC
    exec: int  # the main process's execve succeeded, as the agent saw it
    started_sent: int  # STARTED was sent


def _ns(m: Message, key: str) -> int:
    value = m.get(key)
    if value is None or value == "":
        raise StampError(f"{m.type.name} without {key}")
    if not (len(value) <= NS_DIGITS and value.isascii() and value.isdigit()):
        raise StampError(f"{m.type.name} with a malformed {key}: '{shorten(value)}'")
    number = int(value)
    if number > NS_MAX:
        raise StampError(f"{m.type.name} with {key}={number}, more than a year")
    return number


def parse(ok: Message, started: Message) -> GuestStamps:
    """The stamps of a CONTAINER's OK and the main EXEC's STARTED, checked; or StampError."""
    if ok.type is not Msg.OK or started.type is not Msg.STARTED:
        raise StampError(f"stamps come in OK and STARTED, not {ok.type.name} and "
                         f"{started.type.name}")
    stamps = GuestStamps(
        agent=_ns(ok, "agent_ns"), ok_request=_ns(ok, "request_ns"),
        mounted=_ns(ok, "mounted_ns"), ok_sent=_ns(ok, "now_ns"),
        started_request=_ns(started, "request_ns"), exec=_ns(started, "exec_ns"),
        started_sent=_ns(started, "now_ns"))
    order = (stamps.agent, stamps.ok_request, stamps.mounted, stamps.ok_sent,
             stamps.started_request, stamps.exec, stamps.started_sent)
    if order[0] == 0 or any(a > b for a, b in zip(order, order[1:], strict=False)):
        raise StampError("the guest's stamps are out of order: agent_ns <= request_ns <= "
                         "mounted_ns <= now_ns (OK) <= request_ns <= exec_ns <= now_ns "
                         "(STARTED) does not hold")
    return stamps
