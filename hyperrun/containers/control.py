"""stop, kill, start and restart: a container's life after `run`, with no daemon.

Every verb takes the container's lock (records.locked), so two `stop`s, or `rm -f`
during `start`, follow one another and each finds the state the other left. Signals
reach the main process through the container's monitor (vm/monitor.py), which any
number of commands may use at once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import libvirt

from hyperrun.containers import boot, lifecycle, records
from hyperrun.containers.lifecycle import EXIT_KILLED, State
from hyperrun.containers.process import main_process
from hyperrun.containers.records import Container
from hyperrun.errors import GuestGone, HyperrunError, UsageError
from hyperrun.log import log
from hyperrun.store import Store
from hyperrun.vm import hypervisor, monitor

# After SIGKILL the agent reports the end at once; this long without it, the guest
# is not answering and its VM is destroyed.
KILL_GRACE = 5.0
# How long libvirt may take to make a destroyed or powered-off domain disappear.
GONE_TIMEOUT = 30.0
POLL = 0.05


class NotRunning(UsageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"container {name} is not running",
                         hint=f"see `hyperrun ps -a`; `hyperrun start {name}` starts it again")


def signal_main(store: Store, c: Container, signum: int) -> bool:
    """Send signum to c's main process through its monitor; False if it cannot be reached."""
    try:
        with monitor.session(records.paths(store, c.id).mon_socket) as guest:
            guest.send_signal(1, signum)
    except GuestGone as exc:
        log.debug("no signal sent: %s", exc.message)
        return False
    return True


def _ended(conn: libvirt.virConnect, store: Store, c: Container, timeout: float) -> bool:
    """Wait up to timeout for c's main process to end (its exit file) or its VM to go."""
    files = records.paths(store, c.id)
    deadline = time.monotonic() + timeout
    while True:
        if files.exit_file.exists():
            return True
        dom = lifecycle.domain(conn, store, c)
        if dom is None or not hypervisor.is_active(dom):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def _finish(conn: libvirt.virConnect, store: Store, c: Container) -> Container:
    """Once c's VM is going: wait until it and its monitor are gone, record the end."""
    owner = records.owner(store, c)
    if not hypervisor.wait_gone(conn, c.domain_uuid, owner, timeout=GONE_TIMEOUT):
        dom = lifecycle.domain(conn, store, c)
        if dom is not None:
            hypervisor.destroy(dom)
        hypervisor.wait_gone(conn, c.domain_uuid, owner, timeout=GONE_TIMEOUT)
    monitor.stop(c.monitor_pid, records.paths(store, c.id).mon_socket)
    c, _ = lifecycle.refresh(conn, store, c)
    records.remove_sockets(store, c)
    return c


def stop(conn: libvirt.virConnect, store: Store, ref: str, timeout: float,
         signum: int = signal.SIGTERM) -> Container:
    """docker stop: signum to the main process, SIGKILL after timeout, then the VM ends."""
    c = records.find(store, ref)
    with records.locked(store, c):
        # Before anything ends: its restart policy must see it, also if it is between
        # two restarts right now (exited, its next start about to come).
        c = records.record_manual_stop(store, records.find(store, c.id))
        c, state = lifecycle.refresh(conn, store, c)
        if state is State.EXITED:
            return c
        dom = lifecycle.domain(conn, store, c)
        if dom is None:  # still being set up by its `run`: nothing to signal yet
            raise UsageError(f"container {c.name} is still starting",
                             hint="try again in a moment")
        if state is State.PAUSED:
            hypervisor.resume(dom)  # a frozen guest could neither handle nor report
            records.record_paused(store, c, False)
        reached = signal_main(store, c, signum)
        if not (reached and _ended(conn, store, c, timeout)):
            if reached and signal_main(store, c, signal.SIGKILL):
                reached = _ended(conn, store, c, KILL_GRACE)
            if not reached:
                # No answer from the guest: the VM is ended from outside, which is what
                # SIGKILL of the main process would have led to.
                hypervisor.destroy(dom)
                records.record_lost(store, c, EXIT_KILLED, "")
        return _finish(conn, store, c)


def kill(conn: libvirt.virConnect, store: Store, ref: str, signum: int) -> Container:
    """docker kill: deliver signum to the main process, without waiting for the end."""
    c = records.find(store, ref)
    with records.locked(store, c):
        c, state = lifecycle.refresh(conn, store, records.find(store, c.id))
        if state not in (State.UP, State.PAUSED):
            raise NotRunning(c.name)
        c = records.record_manual_stop(store, c)
        if not signal_main(store, c, signum):
            if signum != signal.SIGKILL:
                raise HyperrunError(f"cannot reach container {c.name}'s monitor",
                                    hint="`hyperrun stop` or `hyperrun rm -f` ends it anyway")
            dom = lifecycle.domain(conn, store, c)
            if dom is not None:
                hypervisor.destroy(dom)
                records.record_lost(store, c, EXIT_KILLED, "")
    return c


def start(conn: libvirt.virConnect, store: Store, ref: str,
          automatic: Callable[[Container], bool] | None = None) -> Container:
    """Boot an exited container again: same ID, name, settings and writable layer.

    automatic: the restart policy's test, checked again under the lock (a `stop` may
    have come in between); None for a `start` by hand.
    """
    c = records.find(store, ref)
    with records.locked(store, c):
        c, state = lifecycle.refresh(conn, store, records.find(store, c.id))
        if state is not State.EXITED:
            return c  # docker start of a running container does nothing
        if automatic is not None and not automatic(c):
            return c
        if c.remove:
            raise UsageError(f"container {c.name} was run with --rm and cannot be restarted",
                             hint="run a new container")
        monitor.stop(c.monitor_pid, records.paths(store, c.id).mon_socket)
        c = records.restarting(store, c, automatic=automatic is not None)
        try:
            with boot.booted(conn, store, c, detach=True) as (c, dom, guest):
                guest.start(1, main_process(c.settings), None, main=True,
                            alive=lambda: hypervisor.is_active(dom))
                records.record_booted(store, c)
        except HyperrunError as exc:
            records.record_lost(store, c, exc.status, exc.message)
            records.remove_sockets(store, c)
            raise
    return c
