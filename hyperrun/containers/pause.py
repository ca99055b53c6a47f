"""`pause` and `unpause`: stopping and resuming a running container's vCPUs through libvirt.

Only the container's own domain is touched (lifecycle.domain: its UUID and metadata must
name this store and container). The `hyperrun run` attached to it keeps waiting: its
stdio loop has no timeout while the process runs, and QEMU keeps the sockets open.
"""

from __future__ import annotations

import libvirt

from hyperrun.containers import lifecycle, records
from hyperrun.containers.lifecycle import State
from hyperrun.errors import UsageError
from hyperrun.store import Store
from hyperrun.vm import hypervisor


def _domain(conn: libvirt.virConnect, store: Store, ref: str,
            want: State) -> libvirt.virDomain | None:
    """ref's domain if ref is in state want; a usage error worded as docker's otherwise.

    None: its VM ended between the two look-ups, so there is nothing left to act on.
    """
    c, state = lifecycle.refresh(conn, store, records.find(store, ref))
    if state is want:
        return lifecycle.domain(conn, store, c)
    running = state in (State.UP, State.PAUSED)
    if want is State.PAUSED:  # as docker's unpause, whatever else it is
        raise UsageError(f"Container {ref} is not paused",
                         hint="only a container paused with `hyperrun pause` can be unpaused"
                         if running else "see `hyperrun ps -a`; it is not running")
    if running:
        raise UsageError(f"Container {ref} is already paused",
                         hint=f"resume it with `hyperrun unpause {ref}`")
    raise UsageError(f"Container {ref} is not running",
                     hint="see `hyperrun ps -a`; only a running container can be paused")


def pause(conn: libvirt.virConnect, store: Store, ref: str) -> None:
    dom = _domain(conn, store, ref, State.UP)
    if dom is not None:
        # Recorded first: an exec that reads the record must not start into a frozen VM.
        records.record_paused(store, records.find(store, ref), True)
        try:
            hypervisor.suspend(dom)
        except BaseException:
            records.record_paused(store, records.find(store, ref), False)
            raise


def unpause(conn: libvirt.virConnect, store: Store, ref: str) -> None:
    dom = _domain(conn, store, ref, State.PAUSED)
    if dom is not None:
        hypervisor.resume(dom)
        records.record_paused(store, records.find(store, ref), False)
