"""`wait`: block until containers end, whoever runs them, and read how they ended.

The exit status is written by the `hyperrun run` that owns the VM; a run that was killed
never writes it, and lifecycle.refresh records 137 for it once its VM has gone too. So
polling the record through refresh sees every way a container can end.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import libvirt

from hyperrun.containers import lifecycle, records
from hyperrun.containers.lifecycle import State
from hyperrun.containers.records import Container
from hyperrun.errors import ContainerNotFound, HyperrunError
from hyperrun.store import Store

# How often a waiting container is looked at: cheap (one record read, one libvirt look-up),
# and short enough that `wait` returns within a blink of the container's end.
POLL = 0.2


class RemovedWhileWaiting(HyperrunError):
    """The container was removed (`rm -f`, or `--rm` at its end) before it recorded a status."""

    status = 1


def until_exited(conn: libvirt.virConnect, store: Store, c: Container,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """c's exit status, once it has one."""
    while True:
        try:
            now = records.find(store, c.id)  # the full id: renames do not matter
        except ContainerNotFound:
            raise RemovedWhileWaiting(
                f"container {c.name} was removed before its exit status was recorded",
                hint="a container run with --rm keeps no status; run it without --rm "
                     "to wait for it") from None
        now, state = lifecycle.refresh(conn, store, now)
        if state is State.EXITED and now.exit_status is not None:
            return now.exit_status
        sleep(POLL)
