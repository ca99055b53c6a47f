"""What killed commands can leave behind with no record to account for it (`system prune`).

A record is written before anything else of a container exists and removed after
everything else, so these are rare: a VM or monitor whose container was removed while
they still ran (a killed `rm`), a directory whose record was never written (a killed
`run` between the two). Only this store's are touched: a VM counts as ours only when its
`<metadata>` names this store, and a monitor only when it listens in this store's
socket directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import libvirt

from hyperrun.containers import pool, pool_vms, records
from hyperrun.store import Store, remove_path
from hyperrun.vm import hypervisor
from hyperrun.vm.domain_xml import METADATA_NS, parse_owner


def _known(store: Store) -> set[str]:
    """Containers, and the VMs of the pools (containers/pool.py), which pool_vms sweeps."""
    return {c.id for c in records.all_containers(store)} | {
        d.name for d, _ in pool.listed(store)}


def remove_domains(conn: libvirt.virConnect, store: Store) -> list[str]:
    """Destroy this store's VMs whose container no longer exists; their names.

    Pooled VMs that died, or that no pool wants, go first (pool_vms.sweep).
    """
    with pool_vms.Connections() as conns:
        pool_vms.sweep(conns, store)
    known = _known(store)
    removed = []
    for dom in conn.listAllDomains():
        try:
            owner = parse_owner(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                                             METADATA_NS, 0))
        except libvirt.libvirtError:
            continue  # not hyperrun's, or gone meanwhile
        if owner is None or owner.store_id != store.identity():
            continue
        if owner.container_id not in known:
            hypervisor.destroy(dom)
            removed.append(dom.name())
    return removed


def _monitors(store: Store) -> dict[int, str]:
    """Running monitors of this store: pid -> the container id prefix of their socket."""
    found = {}
    prefix = os.fsencode(store.sockets) + b"/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv[0].endswith(b"hyperrun-monitor") or b"--listen" not in argv:
            continue
        at = argv.index(b"--listen") + 1
        listen = argv[at] if at < len(argv) else b""
        if listen.startswith(prefix) and listen.endswith(b".mon"):
            found[int(entry.name)] = listen[len(prefix):-4].decode(errors="replace")
    return found


def stop_monitors(store: Store) -> list[str]:
    """End monitors whose container no longer exists (their VM is gone or going)."""
    short = {cid[:12] for cid in _known(store)}
    stopped = []
    for pid, cid in _monitors(store).items():
        if cid not in short:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                stopped.append(f"monitor {pid} ({cid})")
    return stopped


def remove_directories(store: Store) -> list[str]:
    """Container directories with no record in them (a `run` killed between the two)."""
    removed: list[str] = []
    with store.lock("containers"):  # `create` writes both under it
        if not store.containers.is_dir():
            return removed
        for d in store.containers.iterdir():
            if d.is_dir() and not d.is_symlink() and not (d / "state.json").exists():
                remove_path(d)
                removed.append(d.name)
    return removed
