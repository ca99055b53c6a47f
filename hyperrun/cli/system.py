"""`hyperrun info` and `hyperrun version`: what this host and store have to run containers."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections import Counter
from pathlib import Path

import libvirt

from hyperrun import __version__, log
from hyperrun.cli.table import human_size
from hyperrun.containers import records, status
from hyperrun.errors import HyperrunError
from hyperrun.images.store import ImageStore
from hyperrun.store import Store
from hyperrun.vm import accel, hypervisor
from hyperrun.vm.versions import kernel_version, libvirt_version


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("info", help="show what this host and store have")
    p.add_argument("--connect", help="libvirt URI")
    p.set_defaults(func=info)

    p = subparsers.add_parser("version", help="show hyperrun's, libvirt's and QEMU's versions")
    p.add_argument("--connect", help="libvirt URI")
    p.set_defaults(func=version)


def disk_usage(path: Path) -> int:
    """Bytes allocated below path (sparse disks count what they use), never following links."""
    total = 0
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
            except OSError:
                continue
    return total


def _server(conn: libvirt.virConnect) -> list[str]:
    return [f" libvirt: {libvirt_version(conn.getLibVersion())}",
            f" QEMU: {libvirt_version(conn.getVersion())}"]


def _containers(conn: libvirt.virConnect | None, store: Store) -> list[str]:
    if conn is None:  # only the records: whether an unfinished one runs cannot be told
        found = list(records.all_containers(store))
        exited = sum(c.exit_status is not None for c in found)
        return [f" Containers: {len(found)}", f"  Exited: {exited}",
                f"  Unknown (libvirt unreachable): {len(found) - exited}"]
    states = Counter(s.docker_state for s in status.all_statuses(conn, store))
    return [f" Containers: {sum(states.values())}",
            *(f"  {word.capitalize()}: {states[word]}" for word in ("running", "paused",
                                                                    "created", "exited"))]


def info(args: argparse.Namespace, store: Store) -> int:
    uri = hypervisor.uri_from_env(args.connect)
    conn, why = status.connect_or_none(uri)
    lines = []
    try:
        lines += _containers(conn, store)
        try:
            lines.append(f" Images: {len(ImageStore(store).list())}")
        except HyperrunError as exc:
            lines.append(f" Images: unknown ({exc.message})")
        lines.append(f" libvirt URI: {uri}")
        lines += _server(conn) if conn is not None else [f" libvirt: unreachable ({why})"]
    finally:
        if conn is not None:
            conn.close()
    problem = accel.kvm_problem()
    lines.append(" Accelerator: kvm" if problem is None
                 else f" Accelerator: tcg (software emulation; KVM unavailable: {problem})")
    kernel, initrd = store.boot / "vmlinuz", store.boot / "initrd.img"
    if kernel.is_file():
        lines.append(f" Guest kernel: {kernel} ({kernel_version(kernel) or 'version unknown'})")
    else:
        lines.append(f" Guest kernel: {kernel} (missing: run scripts/setup)")
    lines.append(f" Guest initrd: {initrd}" + ("" if initrd.is_file() else " (missing)"))
    lines.append(f" Store: {store.root} ({human_size(disk_usage(store.root))})")
    for label, path in (("Blobs", store.blobs), ("Base disks", store.disks),
                        ("Containers", store.containers)):
        lines.append(f"  {label}: {path} ({human_size(disk_usage(path))})")
    print("Server:")
    print("\n".join(log.escape(line) for line in lines))
    return 0


def version(args: argparse.Namespace, store: Store) -> int:
    print("Client:")
    print(f" Version: {__version__}")
    print(f" Python: {platform.python_version()}")
    print(f" libvirt library: {libvirt_version(libvirt.getVersion())}")
    print(f" OS/Arch: {sys.platform}/{platform.machine()}")
    sys.stdout.flush()
    uri = hypervisor.uri_from_env(args.connect)
    conn = hypervisor.connect(uri)  # as docker: the server part needs the daemon
    try:
        print(f"Server: {uri}")
        print("\n".join(_server(conn)))
    finally:
        conn.close()
    return 0
