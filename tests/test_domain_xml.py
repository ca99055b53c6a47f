"""Domain XML: golden output, and libvirt's test driver accepts it."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from hyperrun.spec import Accel, DomainOwner, VmSpec
from hyperrun.vm.domain_xml import METADATA_NS, domain_xml, parse_owner

GOLDEN = Path(__file__).parent / "golden"


QBOOT = Path("/usr/share/qemu/qboot.rom")
OWNER = DomainOwner("5702a1e4c3d9", "0123456789ab" + "cd" * 26)


def _vm(accel: Accel = Accel.TCG, loader: Path | None = QBOOT) -> VmSpec:
    return VmSpec(
        name="hyperrun-5702a1e4c3d9-0123456789ab",
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
        owner=OWNER,
        loader=loader,
        free_page_reporting=True,
        memfd_ram=True,
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


def test_the_tcg_translation_cache_is_sized_only_under_tcg() -> None:
    from dataclasses import replace

    xml = domain_xml(replace(_vm(Accel.TCG), tb_cache_mib=32))
    assert "<tcg>\n      <tb-cache unit=\"MiB\">32</tb-cache>\n    </tcg>" in xml
    assert "tb-cache" not in domain_xml(replace(_vm(Accel.KVM), tb_cache_mib=32))
    assert "tb-cache" not in domain_xml(_vm(Accel.TCG))


def test_free_page_reporting_is_a_virtio_balloon_that_reports() -> None:
    from dataclasses import replace

    xml = domain_xml(replace(_vm(), free_page_reporting=True))
    assert '<memballoon model="virtio" freePageReporting="on" />' in xml
    assert '<memballoon model="none" />' in domain_xml(replace(_vm(), free_page_reporting=False))


def test_memfd_guest_ram() -> None:
    from dataclasses import replace

    xml = domain_xml(replace(_vm(), memfd_ram=True))
    assert "<memoryBacking>\n    <source type=\"memfd\" />\n  </memoryBacking>" in xml
    assert "memoryBacking" not in domain_xml(replace(_vm(), memfd_ram=False))


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
        assert "<memballoon model='virtio' freePageReporting='on'" in parsed
        assert "<source type='memfd'/>" in parsed
        # What hypervisor.owned_domain reads back to tell our domains from others'.
        metadata = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
        assert parse_owner(metadata) == OWNER
        dom.destroy()
        dom.undefine()
    finally:
        conn.close()


@pytest.mark.parametrize("metadata", [
    "<container/>",
    f'<container xmlns="{METADATA_NS}"><store>s</store></container>',
    f'<other xmlns="{METADATA_NS}"><store>s</store><id>c</id></other>',
    '<container xmlns="https://example.com/x"><store>s</store><id>c</id></container>',
    "not xml",
])
def test_foreign_or_broken_metadata_names_no_owner(metadata: str) -> None:
    assert parse_owner(metadata) is None


def test_metadata_round_trips() -> None:
    plain = f"<container><store>{OWNER.store_id}</store><id>{OWNER.container_id}</id></container>"
    assert parse_owner(plain) == OWNER  # as libvirt returns it: namespace dropped
    xml = domain_xml(_vm())
    start, end = xml.index("<hyperrun:container"), xml.index("</metadata>")
    assert parse_owner(xml[start:end]) == OWNER
