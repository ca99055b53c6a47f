"""Background clean-up after a container's VM: runs detached so the user need not wait.

libvirt takes a second or two to tear a domain down after the guest powers off. The
process result is known before that, so `hyperrun run` returns at once and leaves this
small process to wait for the domain to disappear and then remove what it leaves behind.

It runs as root, so it is started isolated (see spawn): `python -I` in "/", importing
hyperrun from the directory the parent's own hyperrun came from, never from the caller's
working directory, PYTHONPATH or user site-packages.
"""

from __future__ import annotations

import sys
from pathlib import Path

import libvirt

from hyperrun.spec import DomainOwner
from hyperrun.store import remove_path
from hyperrun.subproc import isolated_python, spawn_detached
from hyperrun.vm import hypervisor


def spawn(uri: str, uuid: str, owner: DomainOwner, paths: list[Path]) -> None:
    """Start the reaper for owner's domain; it removes paths once the domain has gone."""
    spawn_detached([*isolated_python("hyperrun.containers.reaper"), uri, uuid,
                    owner.store_id, owner.container_id, *map(str, paths)])


def main(argv: list[str]) -> int:
    uri, uuid, store_id, container_id, *paths = argv
    owner = DomainOwner(store_id, container_id)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        conn = None
    if conn is not None:
        if not hypervisor.wait_gone(conn, uuid, owner, timeout=30.0):
            dom = hypervisor.owned_domain(conn, uuid, owner)
            if dom is not None:
                hypervisor.destroy(dom)
            hypervisor.wait_gone(conn, uuid, owner, timeout=30.0)
        conn.close()
    for path in map(Path, paths):
        remove_path(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
