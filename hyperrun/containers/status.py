"""What `inspect`, `ps` and `info` report of containers: records reconciled with libvirt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import libvirt

from hyperrun.containers import lifecycle, records
from hyperrun.containers.lifecycle import State
from hyperrun.containers.records import Container
from hyperrun.errors import HyperrunError
from hyperrun.store import Store
from hyperrun.vm import hypervisor

# libvirt's QEMU driver (qemu:///system) writes each running domain's QEMU pid here.
LIBVIRT_QEMU_RUN = Path("/run/libvirt/qemu")

# docker's State.Status words for hyperrun's states.
DOCKER_STATUS = {State.CREATED: "created", State.UP: "running", State.PAUSED: "paused",
                 State.EXITED: "exited"}


@dataclass(frozen=True)
class Status:
    container: Container  # as recorded after reconciling (a killed run is now exited)
    state: State
    pid: int  # the VM's QEMU process while it runs, else 0
    was_killed: bool  # reconciling just found its `hyperrun run` killed

    @property
    def docker_state(self) -> str:
        return DOCKER_STATUS[self.state]

    @property
    def running(self) -> bool:
        """docker's State.Running: a paused container still runs, frozen."""
        return self.state in (State.UP, State.PAUSED)


def qemu_pid(domain_name: str, run_dir: Path = LIBVIRT_QEMU_RUN) -> int:
    """The pid of the QEMU running domain_name on this host, or 0 if it cannot be told.

    The pid file is only believed when that process's command line names the domain
    (`-name guest=NAME`): a stale file or a recycled pid must not be reported.
    """
    try:
        pid = int((run_dir / f"{domain_name}.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return 0
    wanted = f"guest={domain_name}".encode()
    return pid if any(arg.split(b",")[0] == wanted for arg in cmdline) else 0


def of(conn: libvirt.virConnect, store: Store, c: Container) -> Status:
    """c's status, from its record and (unless it has exited) libvirt."""
    now, state = lifecycle.refresh(conn, store, c)
    pid = 0
    if state in (State.UP, State.PAUSED):
        dom = lifecycle.domain(conn, store, now)
        if dom is not None:
            pid = qemu_pid(dom.name())
    # Reconciling found an end nobody reported as it happened (a killed run or VM).
    lost = c.exit_status is None and now.exit_status is not None and bool(now.error)
    return Status(now, state, pid, lost)


def all_statuses(conn: libvirt.virConnect, store: Store) -> list[Status]:
    """Every container of store, newest first (as `ps` lists them)."""
    if store.containers.is_dir():
        records.sweep(store)
    found = [of(conn, store, c) for c in records.all_containers(store)]
    return sorted(found, key=lambda s: s.container.created, reverse=True)


def connect_or_none(uri: str) -> tuple[libvirt.virConnect | None, str]:
    """A libvirt connection, or None and why not (for commands that can do without one)."""
    try:
        return hypervisor.connect(uri), ""
    except HyperrunError as exc:
        return None, exc.message
