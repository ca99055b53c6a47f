"""Domain XML: golden output, and libvirt's test driver accepts it."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from hyperrun.spec import Accel, VmSpec
from hyperrun.vm.domain_xml import domain_xml

GOLDEN = Path(__file__).parent / "golden"


QBOOT = Path("/usr/share/qemu/qboot.rom")


def _vm(accel: Accel = Accel.TCG, loader: Path | None = QBOOT) -> VmSpec:
    return VmSpec(
        name="hyperrun-0123456789ab",
        uuid="6a0b7a2e-1111-4c9e-9a4b-0123456789ab",
        accel=accel,
        vcpus=2,
        memory_mib=256,
        kernel=Path("/var/lib/hyperrun/boot/vmlinuz"),
        initrd=Path("/var/lib/hyperrun/boot/initrd.img"),
        cmdline="console=ttyS0 quiet panic=-1 rdinit=/init",
        overlay=Path("/var/lib/hyperrun/containers/c1/overlay.qcow2"),
        base=Path("/var/lib/hyperrun/disks/abc.ext4"),
        ctl_socket=Path("/var/lib/hyperrun/sock/0123456789ab.ctl"),
        io_socket=Path("/var/lib/hyperrun/sock/0123456789ab.io"),
        console_log=Path("/var/lib/hyperrun/containers/c1/console.log"),
        loader=loader,
    )


@pytest.mark.parametrize("accel", [Accel.TCG, Accel.KVM])
def test_matches_golden(accel: Accel) -> None:
    golden = GOLDEN / f"domain-{accel}.xml"
    assert domain_xml(_vm(accel)) == golden.read_text()


def test_is_deterministic() -> None:
    assert domain_xml(_vm()) == domain_xml(_vm())


def test_auto_must_be_resolved_first() -> None:
    with pytest.raises(ValueError):
        domain_xml(_vm(Accel.AUTO))


def test_without_loader_uses_default_firmware() -> None:
    assert "<loader" not in domain_xml(_vm(loader=None))


def test_libvirt_test_driver_accepts_define_create_destroy() -> None:
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(domain_xml(_vm()))
        dom.create()
        assert dom.isActive()
        assert dom.info()[3] == 2
        assert dom.info()[1] == 256 * 1024  # KiB
        parsed = dom.XMLDesc()
        assert "org.hyperrun.ctl" in parsed and "org.hyperrun.io" in parsed
        assert "<format type='raw'/>" in parsed
        dom.destroy()
        dom.undefine()
    finally:
        conn.close()
