"""Choosing between hardware virtualisation (KVM) and software emulation (TCG)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from hyperrun.errors import HyperrunError
from hyperrun.log import warning
from hyperrun.spec import Accel


def _cpu_has_virt(cpuinfo: Path) -> bool:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = line.partition(":")[2].split()
            return "vmx" in flags or "svm" in flags
    return False


def _kvm_usable(dev: Path) -> bool:
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def kvm_problem(cpuinfo: Path = Path("/proc/cpuinfo"), dev: Path = Path("/dev/kvm")) -> str | None:
    """Why hardware KVM cannot be used here, or None when it can."""
    if not _cpu_has_virt(cpuinfo):
        return "the CPU reports no vmx/svm flag"
    if not _kvm_usable(dev):
        return f"{dev} is missing or not accessible"
    return None


def resolve(requested: Accel, warn: bool = True, once: Path | None = None,
            **probe: Path) -> Accel:
    """Turn --accel auto|kvm|tcg into kvm or tcg, warning when falling back.

    With `once`, a marker file, the warning is given only while the marker does not
    exist (once per store: `hyperrun info` keeps saying it).
    """
    if requested is Accel.TCG:
        return Accel.TCG
    problem = kvm_problem(**probe)
    if problem is None:
        return Accel.KVM
    if requested is Accel.KVM:
        raise HyperrunError(
            f"--accel kvm: hardware virtualisation is not available ({problem})",
            hint="use --accel tcg (software emulation) or --accel auto",
        )
    if warn and (once is None or not once.exists()):
        warning(f"no hardware virtualisation ({problem}); using TCG software emulation"
                + (" (said once; `hyperrun info` tells again)" if once is not None else ""))
        if once is not None:
            with contextlib.suppress(OSError):
                once.touch(mode=0o600)
    return Accel.TCG
