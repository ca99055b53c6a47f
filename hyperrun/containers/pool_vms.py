"""Booting the VMs of the pools (containers/pool.py), sweeping the ones nobody can use,
and the detached helper that refills a pool after `run` took a VM from it.

A VM is booted exactly as a container's (boot.running_vm) but left to libvirt (no
AUTODESTROY: its booter exits), with its files in store.pool/vms/<id>/, and counts as
ready once its agent has opened both ports (libvirt then shows them `connected`): from
there it waits, for as long as it takes, for a `CONTAINER`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import libvirt

from hyperrun.containers import boot, names, pool, records
from hyperrun.containers import run as run_path
from hyperrun.containers.pool import Pool, PooledVm, PoolKey
from hyperrun.errors import BootFailed, HyperrunError
from hyperrun.images.disk import create_overlay, share_with_qemu
from hyperrun.images.store import ImageStore
from hyperrun.log import log
from hyperrun.spec import Accel
from hyperrun.store import Store, process_alive, remove_path
from hyperrun.vm import hypervisor, monitor
from hyperrun.vm.protocol import CTL_PORT, IO_PORT

READY_POLL = 0.05
WAIT_GONE = 30.0


def assets_tag(store: Store) -> str:
    """What a pooled VM boots with beyond its image: the store's kernel and initrd."""
    assets = run_path.boot_assets(store, None)
    return pool.boot_assets_tag(assets.kernel, assets.initrd)


def _ports_open(dom: libvirt.virDomain) -> bool:
    """Whether the guest has opened both of hyperrun's ports (its agent is up)."""
    try:
        devices = ET.fromstring(dom.XMLDesc(0)).find("devices")
    except (libvirt.libvirtError, ET.ParseError):
        return False
    states = {t.get("name"): t.get("state") for t in
              (devices.iterfind("channel/target") if devices is not None else ())}
    return states.get(CTL_PORT) == states.get(IO_PORT) == "connected"


def boot_vm(conn: libvirt.virConnect, store: Store, p: Pool) -> PooledVm:
    """Boot one VM for pool p and wait until its agent waits for CONTAINER."""
    images = ImageStore(store)
    image = images.get(p.key.image_id)
    base = images.base_disk(image)
    share_with_qemu(base, hypervisor.qemu_ids(conn, Accel(p.key.accel)))
    assets = run_path.boot_assets(store, None)
    vm_id = names.new_id()
    files = pool.vm_paths(store, vm_id)
    vm = PooledVm(vm_id, p.key, str(uuid.uuid4()), assets_tag(store), os.getpid(),
                  time.time())
    with store.lock("pool"):  # the sweep sees the directory and vm.json, or neither
        files.dir.mkdir(mode=0o711, parents=True)
        pool.write_vm(store, vm)
    c = records.Container(
        vm_id, "", p.image, image.id, (), vm.created,
        domain=records.domain_name(store, vm_id), domain_uuid=vm.domain_uuid,
        settings=records.Settings(
            cpus=p.key.cpus, memory_mib=p.key.memory_mib, uri=p.key.uri, accel=p.key.accel,
            kernel=str(assets.kernel), initrd=str(assets.initrd), base_disk=str(base),
            network=p.key.network))
    try:
        create_overlay(base, files.overlay)
        with boot.running_vm(conn, store, c, files, detach=True) as (dom, pid):
            vm = replace(vm, monitor_pid=pid)
            pool.write_vm(store, vm)
            deadline = time.monotonic() + boot.boot_timeout()
            while not _ports_open(dom):
                if not hypervisor.is_active(dom) or time.monotonic() > deadline:
                    raise BootFailed("a pooled VM failed to boot: its agent did not start",
                                     boot.console_tail(files.console_log))
                time.sleep(READY_POLL)
            vm = replace(vm, ready=True)
            pool.write_vm(store, vm)
    except BaseException:
        _discard(conn, store, files.dir, vm)
        raise
    log.debug("pooled VM %s ready", vm_id[:12])
    return vm


def _discard(conn: libvirt.virConnect | None, store: Store, directory: Path,
             vm: PooledVm | None) -> str | None:
    """Destroy a pooled VM and remove its files; the domain's UUID, if it had one."""
    if vm is not None:
        dom = (hypervisor.owned_domain(conn, vm.domain_uuid, pool.owner(store, vm.id))
               if conn is not None else None)
        if dom is not None:
            hypervisor.destroy(dom)
        files = pool.vm_paths(store, vm.id)
        monitor.stop(vm.monitor_pid, files.mon_socket)
        for sock in files.sockets:
            sock.unlink(missing_ok=True)
    remove_path(directory)
    return vm.domain_uuid if vm is not None else None


class Connections:
    """One libvirt connection per URI the pools use, opened when first needed."""

    def __init__(self) -> None:
        self._open: dict[str, libvirt.virConnect | None] = {}

    def __call__(self, uri: str) -> libvirt.virConnect | None:
        if uri not in self._open:
            try:
                self._open[uri] = hypervisor.connect(uri)
            except HyperrunError:
                self._open[uri] = None
        return self._open[uri]

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self._open.values():
            if conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()


def sweep(conns: Connections, store: Store,
          wait: bool = False) -> collections.Counter[PoolKey]:
    """Discard the pooled VMs nobody can use; count, by key, the ones kept (booting too).

    Gone: claimed by a process that died, booting by one that died, dead while waiting,
    booted with another kernel or initrd, or beyond what the pools want. wait: until
    libvirt no longer lists the discarded domains (`pool rm`).
    """
    wanted = {p.key: p.size for p in pool.pools(store)}
    current = assets_tag(store) if wanted else ""
    kept: collections.Counter[PoolKey] = collections.Counter()
    gone: list[tuple[PooledVm, libvirt.virConnect | None]] = []
    with store.lock("pool"):
        for directory, vm in pool.listed(store):
            if pool.is_claimed(directory):
                if pool.process_claimed(store, directory):
                    continue  # a run is adopting it
            elif vm is not None and not vm.ready and process_alive(vm.filler_pid):
                kept[vm.key] += 1
                continue
            elif vm is not None and vm.ready and kept[vm.key] < wanted.get(vm.key, 0) \
                    and vm.assets == current and _alive(conns, store, vm):
                kept[vm.key] += 1
                continue
            elif not pool.claim_dir(directory):
                continue  # a run has just taken it
            conn = conns(vm.key.uri) if vm is not None else None
            log.debug("discarding pooled VM %s", directory.name[:12])
            if _discard(conn, store, directory, vm) and vm is not None:
                gone.append((vm, conn))
    for vm, conn in gone if wait else ():
        if conn is not None:
            hypervisor.wait_gone(conn, vm.domain_uuid, pool.owner(store, vm.id), WAIT_GONE)
    return kept


def _alive(conns: Connections, store: Store, vm: PooledVm) -> bool:
    conn = conns(vm.key.uri)
    return conn is not None and pool.usable(conn, store, vm) is not None


def fill(store: Store) -> int:
    """Boot VMs until every pool has its size (ready or booting); how many were booted.

    One filler at a time per store: the others wait, then find nothing left to do.
    """
    booted = 0
    with store.lock("pool-fill"), Connections() as conns:
        while True:
            kept = sweep(conns, store)
            short = [p for p in pool.pools(store) if kept[p.key] < p.size]
            if not short:
                return booted
            conn = conns(short[0].key.uri)
            if conn is None:
                raise HyperrunError(f"cannot reach libvirt at {short[0].key.uri}",
                                    hint="is libvirtd running?")
            boot_vm(conn, store, short[0])
            booted += 1


def main(argv: list[str]) -> int:
    """The refill helper (pool.spawn_refill): argv is the store's root."""
    (root,) = argv
    try:
        fill(Store(Path(root)))
    except HyperrunError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
