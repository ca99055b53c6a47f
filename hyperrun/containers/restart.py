"""Restart policies (`--restart`), carried out with no daemon.

A container with a policy has its monitor become this module's `main` once its VM is
gone (hyperrun-monitor --on-exit). That short-lived process waits for libvirt to let the
domain go, reads how the container ended and, if the policy says so, boots it again
with `control.start`, whose new monitor carries the same --on-exit. `stop` and `kill`
mark the container as stopped by hand first, so it stays down, as docker's do.

Policies hold while the host runs: nothing restarts containers after a host reboot
(there is no daemon to do it at boot); `hyperrun start` them, or have the host's init
do it.

Like the reaper it runs as root, so it starts isolated: `python -I` in "/", importing
hyperrun from the parent's own package directory, never from a caller's directory.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from hyperrun.containers.records import Container
from hyperrun.errors import UsageError
from hyperrun.store import Store
from hyperrun.subproc import isolated_python

_POLICY = re.compile(r"(no|always|unless-stopped)|on-failure(?::(\d{1,6}))?")
POLICY_HINT = "use no, always, unless-stopped, on-failure or on-failure:MAX-RETRIES"
# docker's back-off before a restart: 100 ms, doubled each time, at most a minute.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 60.0


def parse_policy(text: str) -> tuple[str, int]:
    """--restart's value as (name, maximum retries; 0 for no maximum)."""
    found = _POLICY.fullmatch(text.strip())
    if found is None:
        raise UsageError(f"invalid restart policy {text!r}", hint=POLICY_HINT)
    if found[1]:
        return found[1], 0
    return "on-failure", int(found[2] or 0)


def wants_restart(c: Container) -> bool:
    """Whether c, which has just ended, is to be started again under its policy."""
    name, retries = parse_policy(c.settings.restart or "no")
    if name == "no" or c.exit_status is None or c.manually_stopped:
        return False
    if name == "on-failure":
        return c.exit_status != 0 and (retries == 0 or c.restart_count < retries)
    return True  # always, unless-stopped: differ only across a daemon restart, which we lack


def on_exit_command(store: Store, c: Container) -> tuple[str, ...]:
    """The program c's monitor becomes when the VM is gone (none without a policy)."""
    if parse_policy(c.settings.restart or "no")[0] == "no":
        return ()
    return (*isolated_python("hyperrun.containers.restart"), str(store.root), c.id)


def main(argv: list[str]) -> int:
    """Judge one ended container and start it again if its policy says so."""
    import libvirt

    from hyperrun.containers import control, lifecycle, records
    from hyperrun.containers.lifecycle import State
    from hyperrun.errors import ContainerNotFound, HyperrunError
    from hyperrun.vm import hypervisor

    root, container_id = argv
    store = Store(Path(root))
    try:
        c = records.find(store, container_id)
        conn = libvirt.open(c.settings.uri)
    except (ContainerNotFound, libvirt.libvirtError):
        return 0  # removed meanwhile, or no libvirt to boot with
    try:
        hypervisor.wait_gone(conn, c.domain_uuid, records.owner(store, c), timeout=60.0)
        c, state = lifecycle.refresh(conn, store, c)
        if state is not State.EXITED or not wants_restart(c):
            return 0
        time.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** c.restart_count))
        control.start(conn, store, c.id, automatic=wants_restart)
    except (ContainerNotFound, HyperrunError) as exc:
        print(f"restart of {container_id[:12]}: {getattr(exc, 'message', exc)}",
              file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0
