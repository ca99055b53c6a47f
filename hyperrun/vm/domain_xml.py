"""The one place libvirt domain XML is made, from a VmSpec. Output is deterministic."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hyperrun.spec import Accel, DomainOwner, NetworkMode, Share, VmSpec
from hyperrun.vm.protocol import CTL_PORT, IO_PORT

# hyperrun's element in a domain's <metadata>: which store and container the domain is for.
METADATA_NS = "https://hyperrun.dev/xmlns/container/1"
METADATA_PREFIX = "hyperrun"
# libvirt's namespace for extra QEMU arguments: how published ports reach QEMU (below).
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NETDEV_ID = "hrnet0"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def domain_xml(vm: VmSpec) -> str:
    """Render the transient domain for one container."""
    if vm.accel is Accel.AUTO:
        raise ValueError("resolve Accel.AUTO before building the domain")
    dom = ET.Element("domain", type="kvm" if vm.accel is Accel.KVM else "qemu")
    _sub(dom, "name", vm.name)
    _sub(dom, "uuid", vm.uuid)
    metadata = _sub(dom, "metadata")
    # Prefixed names with the namespace declared on the element itself, as libvirt wants
    # metadata elements; ElementTree would otherwise hoist the declaration to <domain>.
    owner = _sub(metadata, f"{METADATA_PREFIX}:container",
                 **{f"xmlns:{METADATA_PREFIX}": METADATA_NS})
    _sub(owner, f"{METADATA_PREFIX}:store", vm.owner.store_id)
    _sub(owner, f"{METADATA_PREFIX}:id", vm.owner.container_id)
    _sub(dom, "memory", str(vm.memory_mib), unit="MiB")
    virtiofs = any(share.driver == "virtiofs" for share in vm.shares)
    if vm.memfd_ram or virtiofs:
        backing = _sub(dom, "memoryBacking")
        _sub(backing, "source", type="memfd")
        if virtiofs:  # virtiofsd (vhost-user) maps guest RAM: it must be shared memory
            _sub(backing, "access", mode="shared")
    _sub(dom, "vcpu", str(vm.vcpus))

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if vm.loader is not None:
        # qboot: a minimal firmware that jumps straight to the kernel (~0.3 s less than SeaBIOS).
        _sub(os_el, "loader", str(vm.loader), type="rom", readonly="yes")
    _sub(os_el, "kernel", str(vm.kernel))
    _sub(os_el, "initrd", str(vm.initrd))
    _sub(os_el, "cmdline", vm.cmdline)

    features = _sub(dom, "features")
    _sub(features, "acpi")  # the agent powers off through ACPI
    if vm.accel is Accel.TCG and vm.tb_cache_mib is not None:
        tcg = _sub(features, "tcg")
        _sub(tcg, "tb-cache", str(vm.tb_cache_mib), unit="MiB")
    if vm.accel is Accel.KVM:
        _sub(dom, "cpu", mode="host-passthrough")
    _sub(dom, "clock", offset="utc")
    # The VM lives exactly as long as the container: any stop ends the domain.
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        _sub(dom, event, "destroy")

    devices = _sub(dom, "devices")
    if vm.emulator is not None:
        _sub(devices, "emulator", str(vm.emulator))
    disk = _sub(devices, "disk", type="file", device="disk")
    # The overlay is throw-away per container; unsafe caching skips host flushes.
    _sub(disk, "driver", name="qemu", type="qcow2", cache="unsafe", discard="unmap")
    _sub(disk, "source", file=str(vm.overlay))
    backing = _sub(disk, "backingStore", type="file")
    _sub(backing, "format", type="raw")
    base = _sub(backing, "source", file=str(vm.base))
    # The base disk is shared by every container of the image and world-readable; letting
    # libvirt chown it for one VM would hand it to that VM's QEMU user for good.
    _sub(base, "seclabel", model="dac", relabel="no")
    _sub(backing, "backingStore")
    _sub(disk, "target", dev="vda", bus="virtio")

    _sub(devices, "controller", type="usb", model="none")
    _sub(devices, "controller", type="virtio-serial", index="0")
    for path, port in ((vm.ctl_socket, CTL_PORT), (vm.io_socket, IO_PORT)):
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "source", mode="bind", path=str(path))
        _sub(channel, "target", type="virtio", name=port)

    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(vm.console_log))
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=str(vm.console_log))
    _sub(console, "target", type="serial", port="0")

    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    if vm.free_page_reporting:
        _sub(devices, "memballoon", model="virtio", freePageReporting="on")
    else:
        _sub(devices, "memballoon", model="none")
    _network(dom, devices, vm)
    for share in vm.shares:
        _share(devices, share)

    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def _network(dom: ET.Element, devices: ET.Element, vm: VmSpec) -> None:
    """The guest's NIC on QEMU's user network (SLIRP), with its published ports.

    libvirt 9.0's <portForward> needs passt, which Debian's libvirt is built without, so
    a container that publishes ports gets its netdev and NIC as QEMU arguments with
    hostfwd rules (libvirt marks such a domain "custom-argv"); one that does not, an
    ordinary <interface>. No option ROM: nothing boots from the network.
    """
    if vm.network is NetworkMode.NONE:
        return
    if not vm.ports:
        interface = _sub(devices, "interface", type="user")
        _sub(interface, "model", type="virtio")
        _sub(interface, "rom", enabled="no")
        return
    netdev = ",".join([f"user,id={NETDEV_ID}", *(
        f"hostfwd={p.protocol}:{p.host_ip}:{p.host_port}-:{p.container_port}"
        for p in vm.ports)])
    dom.set("xmlns:qemu", QEMU_NS)
    args = _sub(dom, "qemu:commandline")
    # QEMU places these before libvirt's own devices, so the NIC takes the last PCI slot,
    # which libvirt leaves free, not the first free one, which libvirt wants for its own.
    nic = f"virtio-net-pci,netdev={NETDEV_ID},bus=pci.0,addr=0x1f,romfile="
    for value in ("-netdev", netdev, "-device", nic):
        _sub(args, "qemu:arg", value=value)


def _share(devices: ET.Element, share: Share) -> None:
    """One host directory for the guest: virtiofsd (run by libvirt as root, passthrough
    ownership) or QEMU's own 9p server (as the QEMU user, owners kept in xattrs)."""
    if share.driver == "virtiofs":
        fs = _sub(devices, "filesystem", type="mount", accessmode="passthrough")
        _sub(fs, "driver", type="virtiofs", queue="1024")
        _sub(fs, "binary", path=VIRTIOFSD)
    else:
        fs = _sub(devices, "filesystem", type="mount", accessmode="mapped")
        _sub(fs, "driver", type="path", wrpolicy="immediate")
    _sub(fs, "source", dir=str(share.source))
    _sub(fs, "target", dir=share.tag)
    if share.readonly and share.driver != "virtiofs":
        _sub(fs, "readonly")  # QEMU's 9p server refuses writes (virtiofs: a read-only view)


def parse_owner(metadata: str) -> DomainOwner | None:
    """The owner in hyperrun's metadata element as libvirt returns it, if well-formed.

    libvirt hands the element back with its namespace dropped (it was looked up by that
    namespace), so plain names are ours; any other namespace is not.
    """
    try:
        root = ET.fromstring(metadata)
    except ET.ParseError:
        return None

    def local(tag: str) -> str | None:
        ns, _, name = tag[1:].partition("}") if tag.startswith("{") else (METADATA_NS, "", tag)
        return name if ns == METADATA_NS else None

    fields = {local(child.tag): (child.text or "").strip() for child in root}
    if local(root.tag) != "container" or not fields.get("store") or not fields.get("id"):
        return None
    return DomainOwner(fields["store"], fields["id"])
