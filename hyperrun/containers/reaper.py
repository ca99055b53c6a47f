"""Background clean-up after a container's VM: runs detached so the user need not wait.

libvirt takes a second or two to tear a domain down after the guest powers off. The
process result is known before that, so `hyperrun run` returns at once and leaves this
small process to wait for the domain to disappear and then remove what it leaves behind.
"""

from __future__ import annotations

import sys
from pathlib import Path

import libvirt

from hyperrun.store import remove_path
from hyperrun.vm import hypervisor


def main(argv: list[str]) -> int:
    uri, domain, *paths = argv
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        conn = None
    if conn is not None:
        if not hypervisor.wait_gone(conn, domain, timeout=30.0):
            try:
                hypervisor.destroy(conn.lookupByName(domain))
            except libvirt.libvirtError:
                pass
            hypervisor.wait_gone(conn, domain, timeout=30.0)
        conn.close()
    for path in map(Path, paths):
        remove_path(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
