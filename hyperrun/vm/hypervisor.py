"""libvirt: the connection, domain lifetimes, and translation of libvirt errors."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import libvirt

from hyperrun.errors import HypervisorError
from hyperrun.log import log

DEFAULT_URI = "qemu:///system"

# libvirt prints its errors on stderr unless a handler takes them; ours come as exceptions.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def uri_from_env(explicit: str | None = None) -> str:
    return explicit or os.environ.get("HYPERRUN_CONNECT") or DEFAULT_URI


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
def transient_domain(conn: libvirt.virConnect, xml: str) -> Iterator[libvirt.virDomain]:
    """Create a transient domain that libvirt destroys if this process goes away.

    AUTODESTROY ties the domain to our connection: whether hyperrun exits normally,
    fails or is killed, libvirtd ends the VM when the connection closes, so no guest is
    ever left running behind the user's back.
    """
    try:
        dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
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


def wait_gone(conn: libvirt.virConnect, name: str, timeout: float) -> bool:
    """Wait until no domain called `name` exists; True if it went within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn.lookupByName(name)
        except libvirt.libvirtError:
            return True
        time.sleep(0.05)
    return False
