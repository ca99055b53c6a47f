"""What a benchmark ran on: the host, the accelerator and why, versions, the guest's size."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import libvirt

from hyperrun import __version__
from hyperrun.containers import run as container
from hyperrun.spec import Accel
from hyperrun.store import Store
from hyperrun.vm import accel as accel_mod
from hyperrun.vm import hypervisor
from hyperrun.vm.versions import kernel_version, libvirt_version


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The host CPU's model name, as /proc/cpuinfo gives it ("" if it does not)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return ""


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def accelerator(requested: Accel) -> tuple[str, str]:
    """The accelerator a run with --accel requested gets, and why."""
    problem = accel_mod.kvm_problem()
    if requested is Accel.TCG:
        return "tcg", "--accel tcg was asked for"
    if problem is None:
        return "kvm", "hardware virtualisation is available (/dev/kvm)"
    return "tcg", f"software emulation: KVM is unavailable ({problem})"


def describe(conn: libvirt.virConnect, *, requested: Accel, kernel: Path, initrd: Path,
             vcpus: int, memory_mib: int, image: str) -> dict[str, Any]:
    """The environment section of a benchmark report."""
    name, why = accelerator(requested)
    return {
        "accelerator": name,
        "accelerator_reason": why,
        "host_cpu": cpu_model(),
        "host_cores": os.cpu_count(),
        "host_cores_usable": len(os.sched_getaffinity(0)),
        "host_kernel": platform.release(),
        "qemu_version": libvirt_version(conn.getVersion()),
        "libvirt_version": libvirt_version(conn.getLibVersion()),
        "libvirt_uri": conn.getURI(),
        "guest_kernel": str(kernel),
        "guest_kernel_version": kernel_version(kernel),
        "guest_kernel_bytes": _size(kernel),
        "initrd": str(initrd),
        "initrd_bytes": _size(initrd),
        "vcpus": vcpus,
        "memory_mib": memory_mib,
        "image": image,
        "hyperrun_version": __version__,
        "python_version": platform.python_version(),
    }


def collect(store: Store, uri: str, *, requested: Accel, vcpus: int, memory_mib: int,
            image: str) -> dict[str, Any]:
    """describe(), for the store's boot assets, asking libvirt at uri."""
    assets = container.boot_assets(store, None)
    conn = hypervisor.connect(uri)
    try:
        return describe(conn, requested=requested, kernel=assets.kernel, initrd=assets.initrd,
                        vcpus=vcpus, memory_mib=memory_mib, image=image)
    finally:
        conn.close()
