"""A container's state as `ps` and `rm` see it: its record checked against libvirt.

A domain counts as a container's only when the UUID in the record finds it and its
metadata names this store and this container (hypervisor.owned_domain); names are shared
by every store on the host and prove nothing.
"""

from __future__ import annotations

import enum
from pathlib import Path

import libvirt

from hyperrun.containers import records
from hyperrun.containers.boot import console_tail
from hyperrun.containers.records import Container
from hyperrun.errors import UsageError
from hyperrun.store import Store, process_alive
from hyperrun.vm import hypervisor, monitor

# The status recorded for a container whose `hyperrun run` was killed outright (SIGKILL,
# OOM killer): libvirt ended its VM with it, so its process was stopped without warning,
# which is what docker reports as 137 (128 + SIGKILL). 125 would claim that the process
# never started, and it may well have run for hours.
EXIT_KILLED = 137
KILLED_NOTE = "its `hyperrun run` (pid {pid}) was killed, and the VM ended with it"
PANIC_LINES = 12
BOOT_KILLED_NOTE = "the `hyperrun` (pid {pid}) starting it was killed before its process started"
MONITOR_LOST_NOTE = ("its VM ended while its monitor (pid {pid}) was not running, so how "
                     "its process ended is not known")


class State(enum.Enum):
    CREATED = "Created"  # its `hyperrun run` is still setting it up
    UP = "Up"
    PAUSED = "Paused"  # its VM exists with its vCPUs stopped (`hyperrun pause`)
    EXITED = "Exited"


def domain(conn: libvirt.virConnect, store: Store, c: Container) -> libvirt.virDomain | None:
    return hypervisor.owned_domain(conn, c.domain_uuid, records.owner(store, c))


def refresh(conn: libvirt.virConnect, store: Store, c: Container) -> tuple[Container, State]:
    """c's current state; a run that was killed is recorded as exited on the way."""
    if c.exit_status is not None:
        return c, State.EXITED
    dom = domain(conn, store, c)
    if dom is not None and hypervisor.is_active(dom):
        if (not c.booted or not c.detached) and c.owner_pid and \
                not process_alive(c.owner_pid):
            # The command booting it was killed before its main process started (a
            # detached VM outlives it): nothing will ever start it, so it ends here.
            # So does a foreground container whose VM came from a pool (containers/
            # pool.py): libvirt, not its `run`, holds that VM, so AUTODESTROY cannot.
            hypervisor.destroy(dom)
            monitor.stop(c.monitor_pid, records.paths(store, c.id).mon_socket)
            note = KILLED_NOTE if c.booted else BOOT_KILLED_NOTE
            c = records.record_lost(store, c, EXIT_KILLED, note.format(pid=c.owner_pid))
            return c, State.EXITED
        return c, State.PAUSED if hypervisor.is_paused(dom) else State.UP
    files = records.paths(store, c.id)
    ended = records.read_exit(files)
    if ended is not None:  # its monitor wrote down how the main process ended
        status, message = ended
        panic = _panic(files.console_log) if message and status == EXIT_KILLED else ""
        if panic:
            message = panic
        elif message and status == EXIT_KILLED and not c.detached and not (
                c.owner_pid and process_alive(c.owner_pid)):
            message = KILLED_NOTE.format(pid=c.owner_pid)  # AUTODESTROY took the VM along
        return records.record_lost(store, c, status, message), State.EXITED
    if monitor.alive(c.monitor_pid, files.mon_socket):
        # The VM has just gone; its monitor is about to write down how it ended.
        return c, State.UP if c.started else State.CREATED
    if c.owner_pid and process_alive(c.owner_pid):
        return c, State.CREATED
    # Its owner is gone and so is its VM: nobody will ever record how it ended.
    note = (MONITOR_LOST_NOTE.format(pid=c.monitor_pid) if c.detached
            else KILLED_NOTE.format(pid=c.owner_pid))
    c = records.record_lost(store, c, EXIT_KILLED, note)
    if c.exit_status == EXIT_KILLED:
        records.remove_sockets(store, c)
    return c, State.EXITED


def _panic(console_log: Path) -> str:
    """If the guest's kernel panicked (panic=-1: it reboots, and the domain ends), the
    console's last lines, which say why; else ""."""
    tail = console_tail(console_log).splitlines()
    if not any("Kernel panic" in line for line in tail):
        return ""
    return "the guest kernel panicked; the console's last lines:\n" + "\n".join(
        tail[-PANIC_LINES:])


def remove(conn: libvirt.virConnect, store: Store, c: Container, force: bool) -> None:
    """Remove c's files; a container that has not exited needs force, and is stopped first."""
    with records.locked(store, c):
        c, state = refresh(conn, store, c)
        if state is not State.EXITED and not force:
            word = "paused" if state is State.PAUSED else "running"
            raise UsageError(f"container {c.name} is {word}",
                             hint="stop it first, or use `hyperrun rm -f`")
        dom = domain(conn, store, c)
        if dom is not None:  # running, or an exited one libvirt is still tearing down
            hypervisor.destroy(dom)
            hypervisor.wait_gone(conn, c.domain_uuid, records.owner(store, c), timeout=30.0)
        # Its monitor writes into the directory until it ends.
        monitor.stop(c.monitor_pid, records.paths(store, c.id).mon_socket)
        records.remove_files(store, c)
