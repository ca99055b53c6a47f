"""libvirt: the connection, domain lifetimes, and translation of libvirt errors."""

from __future__ import annotations

import contextlib
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator

import libvirt

from hyperrun.errors import HypervisorError
from hyperrun.log import log
from hyperrun.spec import Accel, DomainOwner, PortMapping
from hyperrun.vm.domain_xml import METADATA_NS, parse_owner

# Re-exported: most commands reach them here.
from hyperrun.vm.uri import DEFAULT_URI as DEFAULT_URI
from hyperrun.vm.uri import uri_from_env as uri_from_env

# libvirt prints its errors on stderr unless a handler takes them; ours come as exceptions.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def connect(uri: str) -> libvirt.virConnect:
    """Open a libvirt connection or explain why it cannot be had."""
    log.debug("connecting to %s", uri)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HypervisorError(
            f"cannot reach libvirt at {uri}: {exc.get_error_message()}",
            hint="is libvirtd running? scripts/setup starts it "
            "(or set --connect / HYPERRUN_CONNECT)",
        ) from exc


@contextlib.contextmanager
def transient_domain(conn: libvirt.virConnect, xml: str,
                     autodestroy: bool = True) -> Iterator[libvirt.virDomain]:
    """Create a transient domain; destroy it if the body fails.

    With autodestroy the domain is tied to our connection: whether hyperrun exits
    normally, fails or is killed, libvirtd ends the VM when the connection closes, so a
    foreground container never runs on behind the user's back. Without it (run -d,
    start) libvirt keeps the VM until it powers off or is destroyed.
    """
    flags = libvirt.VIR_DOMAIN_START_AUTODESTROY if autodestroy else 0
    try:
        dom = conn.createXML(xml, flags)
    except libvirt.libvirtError as exc:
        raise HypervisorError(
            f"libvirt could not start the VM: {exc.get_error_message()}",
            hint="rerun with --debug; the libvirtd log has the details",
        ) from exc
    try:
        yield dom
    except BaseException:
        destroy(dom)
        raise


def destroy(dom: libvirt.virDomain) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom.destroy()


def is_active(dom: libvirt.virDomain) -> bool:
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False


def is_paused(dom: libvirt.virDomain) -> bool:
    """Whether the domain exists but its vCPUs are stopped.

    Any reason counts (a user's pause, or QEMU stopping on a full disk): either way the
    guest does not run, and `unpause` is what resumes it.
    """
    try:
        return bool(dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED)
    except libvirt.libvirtError:
        return False


def suspend(dom: libvirt.virDomain) -> None:
    """Stop the domain's vCPUs; QEMU, its memory and its sockets stay as they are."""
    try:
        dom.suspend()
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"libvirt could not pause the VM: {exc.get_error_message()}",
                              hint="rerun with --debug; the libvirtd log has the details"
                              ) from exc


def resume(dom: libvirt.virDomain) -> None:
    try:
        dom.resume()
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"libvirt could not resume the VM: {exc.get_error_message()}",
                              hint="rerun with --debug; the libvirtd log has the details"
                              ) from exc


def owned_domain(conn: libvirt.virConnect, uuid: str,
                 owner: DomainOwner) -> libvirt.virDomain | None:
    """The domain with this UUID if its metadata names owner as its store and container.

    Names are never trusted: another store on the same libvirt may use any name, and a
    UUID alone could be reused by a domain that is not ours.
    """
    if not uuid:
        return None
    try:
        dom = conn.lookupByUUIDString(uuid)
        metadata = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
    except libvirt.libvirtError:
        return None
    return dom if parse_owner(metadata) == owner else None


def wait_gone(conn: libvirt.virConnect, uuid: str, owner: DomainOwner, timeout: float) -> bool:
    """Wait until owner's domain no longer exists; True if it went within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if owned_domain(conn, uuid, owner) is None:
            return True
        time.sleep(0.05)
    return owned_domain(conn, uuid, owner) is None


def qemu_ids(conn: libvirt.virConnect, accel: Accel) -> tuple[int, int] | None:
    """The uid and gid QEMU runs as for this domain type (libvirt's DAC base label)."""
    try:
        caps = ET.fromstring(conn.getCapabilities())
    except (libvirt.libvirtError, ET.ParseError):
        return None
    domain_type = "kvm" if accel is Accel.KVM else "qemu"
    for model in caps.iterfind("host/secmodel"):
        if model.findtext("model") != "dac":
            continue
        for label in model.iterfind("baselabel"):
            found = re.fullmatch(r"\+(\d+):\+(\d+)", (label.text or "").strip())
            if label.get("type") == domain_type and found:
                return int(found[1]), int(found[2])
    return None


# The netdev libvirt 9.0 names for a domain's first <interface type='user'>.
USER_NETDEV = "hostnet0"
HMP_REPLY_MAX = 200


def forward_ports(dom: libvirt.virDomain, ports: Iterable[PortMapping]) -> None:
    """Publish ports on a running domain's user network, as `-p` does at its start.

    For a VM booted before its ports were known (a pooled one): QEMU's `hostfwd_add`
    through libvirt's monitor passthrough, which marks the domain "custom-monitor".
    """
    import libvirt_qemu  # only this path needs it

    for p in ports:
        rule = f"{p.protocol}:{p.host_ip}:{p.host_port}-:{p.container_port}"
        try:
            reply = libvirt_qemu.qemuMonitorCommand(
                dom, f"hostfwd_add {USER_NETDEV} {rule}",
                libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"libvirt could not publish {p}: {exc.get_error_message()}",
                                  hint="rerun with --debug; the libvirtd log has the details"
                                  ) from exc
        if reply.strip():  # QEMU answers an HMP command that worked with nothing
            raise HypervisorError(f"QEMU could not publish {p}: "
                                  f"{reply.strip()[:HMP_REPLY_MAX]}",
                                  hint="is the host port in use?")
