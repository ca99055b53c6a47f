"""Booting a container's VM: the domain, its monitor, and the guest's first handshake.

`run` (attached or -d) and `start` share this path. The VM is libvirt's; a foreground
`run` ties it to its own connection (AUTODESTROY: the VM ends with the command), while
`run -d` and `start` leave it to libvirt. Either way a monitor holds the guest's channels
for the VM's life, and this command is only its first client.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt

from hyperrun.containers import mounts, network, records, restart, volumes
from hyperrun.containers.records import Container
from hyperrun.errors import BootFailed, GuestGone
from hyperrun.log import log
from hyperrun.spec import Accel, NetworkMode, VmSpec
from hyperrun.store import Store
from hyperrun.vm import hypervisor, monitor
from hyperrun.vm.domain_xml import domain_xml
from hyperrun.vm.session import GuestSession

QBOOT = Path("/usr/share/qemu/qboot.rom")
# The guest kernel's command line. acpi=noirq is a boot-time lever measured under TCG
# (docs/benchmarks.md "Start-up tuning"): PCI interrupts are not routed through ACPI's
# PCI link devices. Enabling each virtio device evaluated the link's AML methods, about
# 0.17 s per device under TCG (five devices: 0.85 s of boot). Every virtio-pci device
# uses MSI-X instead, and ACPI still powers the VM off.
CMDLINE = "console=ttyS0 quiet panic=-1 rdinit=/init acpi=noirq"
# Under TCG the kernel spends 25 jiffies (0.1 s) calibrating the local APIC timer: QEMU's
# emulated CPU has no TSC-deadline timer, which lets a KVM guest skip it, and 6.1 has no
# command line to give the period. With one vCPU the HPET serves as the clock event
# device instead; with more, each vCPU needs its own timer, so the APIC timer stays.
TCG_ONE_VCPU = "noapictimer"


def kernel_cmdline(accel: Accel, vcpus: int) -> str:
    """The guest kernel's command line for a VM of this accelerator and size."""
    if accel is Accel.TCG and vcpus == 1:
        return f"{CMDLINE} {TCG_ONE_VCPU}"
    return CMDLINE
# See docs/benchmarks.md "Containers that stay up": QEMU's default cache is sized for big
# guests, and an idle 128 MiB container had 34 MiB of it resident. 16 MiB still holds what
# an exec runs (RPC p50 10 ms, as the default); at 8 MiB every exec retranslates (100 ms,
# 4 MiB: 300 ms) for 8 MiB less per container.
TB_CACHE_MIB: int | None = 16
CONSOLE_TAIL_LINES = 25
CONSOLE_TAIL_BYTES = 64 << 10
# Told of a run's milestones and what came with them (`hyperrun bench boot`).
Timeline = Callable[[str, Any], None]


def no_timeline(event: str, detail: Any) -> None:
    """The Timeline of every run that is not a benchmark's."""


def vm_spec(store: Store, c: Container, files: records.Paths | None = None) -> VmSpec:
    """The VM of container c, from what its record says it was created with.

    files: where its files are, if not in its container directory (a pooled VM's).
    """
    s = c.settings
    files = files or records.paths(store, c.id)
    return VmSpec(
        name=c.domain,
        uuid=c.domain_uuid,
        accel=Accel(s.accel),
        vcpus=s.cpus,
        memory_mib=s.memory_mib,
        kernel=Path(s.kernel),
        initrd=Path(s.initrd),
        cmdline=kernel_cmdline(Accel(s.accel), s.cpus),
        overlay=files.overlay,
        base=Path(s.base_disk),
        ctl_socket=files.ctl_socket,
        io_socket=files.io_socket,
        console_log=files.console_log,
        owner=records.owner(store, c),
        loader=QBOOT if QBOOT.is_file() else None,
        tb_cache_mib=_tb_cache_mib(),
        free_page_reporting=True,
        memfd_ram=True,
        network=NetworkMode(s.network or NetworkMode.NONE), ports=network.ports_of(s.ports),
        shares=volumes.shares(store, c.id, mounts.of_records(s.mounts)),
    )


def _tb_cache_mib() -> int | None:
    """TCG's translation cache: HYPERRUN_TB_CACHE_MIB (for benchmarks), else TB_CACHE_MIB."""
    value = os.environ.get("HYPERRUN_TB_CACHE_MIB", "")
    if value.isdigit() and 1 <= int(value) <= 4096:
        return int(value)
    return TB_CACHE_MIB


def console_tail(path: Path) -> str:
    # Only the file's end: the guest can write its console without limit.
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - CONSOLE_TAIL_BYTES))
            data = f.read(CONSOLE_TAIL_BYTES)
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-CONSOLE_TAIL_LINES:])


def boot_timeout() -> float:
    return float(os.environ.get("HYPERRUN_BOOT_TIMEOUT", "90"))


@contextlib.contextmanager
def booted(conn: libvirt.virConnect, store: Store, c: Container,
           detach: bool, timeline: Timeline = no_timeline,
           ) -> Iterator[tuple[Container, libvirt.virDomain, GuestSession]]:
    """Boot c's VM and its monitor; yield the record, the domain and a prepared guest.

    On the way out the session closes; the VM stays unless an exception left this
    context (then it is destroyed, as a half-started container must not run on).
    """
    started = time.monotonic()
    with running_vm(conn, store, c, records.paths(store, c.id), detach,
                    timeline) as (dom, pid):
        c = records.record_start(store, c, monitor_pid=pid, detached=detach)
        with _handshake(store, c, dom, timeline) as guest:
            log.debug("guest ready after %.2fs", time.monotonic() - started)
            yield c, dom, guest


@contextlib.contextmanager
def running_vm(conn: libvirt.virConnect, store: Store, c: Container, files: records.Paths,
               detach: bool, timeline: Timeline = no_timeline,
               ) -> Iterator[tuple[libvirt.virDomain, int]]:
    """Start c's domain and its monitor (files: where they keep theirs); yield the domain
    and the monitor's pid. The guest boots and waits for CONTAINER. An exception in the
    body destroys the domain."""
    vm = vm_spec(store, c, files)
    binary = monitor.binary(store.boot)
    files.exit_file.unlink(missing_ok=True)  # a stale one from an earlier boot
    # virtlogd appends to an existing file and keeps its mode: root's alone.
    files.console_log.touch(mode=0o600)
    network.check_free(vm.ports)
    xml = domain_xml(vm)
    log.debug("domain XML:\n%s", xml)
    host_shares = volumes.HostShares(store, c.id, mounts.of_records(c.settings.mounts))
    with host_shares, hypervisor.transient_domain(conn, xml, autodestroy=not detach) as dom:
        host_shares.release()  # the file servers hold their own copies now
        timeline("created", dom)
        try:
            pid = monitor.spawn(monitor.MonitorSpec(
                binary=binary, ctl_socket=files.ctl_socket, io_socket=files.io_socket,
                listen=files.mon_socket, dir=files.dir,
                log_max_size=c.settings.log_max_size, log_max_files=c.settings.log_max_files,
                diagnostics=files.monitor_log, on_exit=restart.on_exit_command(store, c)))
        except GuestGone as exc:
            raise BootFailed(f"{exc}", console_tail(vm.console_log)) from None
        yield dom, pid


@contextlib.contextmanager
def adopted(store: Store, c: Container, dom: libvirt.virDomain, monitor_pid: int,
            detach: bool, timeline: Timeline = no_timeline,
            ) -> Iterator[tuple[Container, libvirt.virDomain, GuestSession]]:
    """booted(), for a VM that booted ahead (containers/pool.py) and waits for its spec.

    Its domain and monitor run already; an exception destroys the domain, as a
    half-started container must not run on.
    """
    try:
        timeline("created", dom)
        ports = network.ports_of(c.settings.ports)
        if ports:  # known only now: published on the running VM
            network.check_free(ports)
            hypervisor.forward_ports(dom, ports)
        c = records.record_start(store, c, monitor_pid=monitor_pid, detached=detach)
        with _handshake(store, c, dom, timeline) as guest:
            yield c, dom, guest
    except BaseException:
        hypervisor.destroy(dom)
        raise


@contextlib.contextmanager
def _handshake(store: Store, c: Container, dom: libvirt.virDomain,
               timeline: Timeline) -> Iterator[GuestSession]:
    """A session through c's monitor, after CONTAINER has set the guest up."""
    console_log = records.paths(store, c.id).console_log
    setup = (network.guest_fields(c.settings)
             + volumes.guest_fields(store, mounts.of_records(c.settings.mounts)))

    def alive() -> bool:
        return hypervisor.is_active(dom)

    try:
        with monitor.session(records.paths(store, c.id).mon_socket) as guest:
            guest.paused = lambda: hypervisor.is_paused(dom)
            try:
                timeline("container_sent", None)
                timeline("ok", guest.setup_container(c.settings.hostname,
                                                     boot_timeout(), alive, setup))
            except (GuestGone, TimeoutError) as exc:
                why = "did not answer in time" if isinstance(exc, TimeoutError) else "stopped"
                raise BootFailed(f"the VM failed to boot: the guest agent {why}",
                                 console_tail(console_log)) from None
            yield guest
    except GuestGone as exc:
        raise BootFailed(f"{exc}", console_tail(console_log)) from None
