"""The container verbs: ps and rm."""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import libvirt

from hyperrun import log
from hyperrun.cli.table import format_table, humanize_duration
from hyperrun.containers import records as state
from hyperrun.errors import HyperrunError, UsageError
from hyperrun.store import Store
from hyperrun.vm import hypervisor


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="show stopped containers too")
    p.add_argument("-q", "--quiet", action="store_true", help="only show container IDs")
    p.add_argument("--connect", help="libvirt URI")
    p.set_defaults(func=ps)

    p = subparsers.add_parser("rm", help="remove one or more containers")
    p.add_argument("-f", "--force", action="store_true", help="stop a running container first")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=rm)


def _running(conn: libvirt.virConnect) -> set[str]:
    return {d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}


def _status(c: state.Container, running: set[str]) -> str:
    if c.domain in running:
        return "Up"
    if c.exit_status is None:
        return "Created"
    return f"Exited ({c.exit_status})"


def ps(args: argparse.Namespace, store: Store) -> int:
    conn = hypervisor.connect(hypervisor.uri_from_env(args.connect))
    try:
        running = _running(conn)
    finally:
        conn.close()
    containers = sorted(state.all_containers(store), key=lambda c: c.created, reverse=True)
    if not args.all:
        containers = [c for c in containers if c.domain in running]
    if args.quiet:
        for c in containers:
            print(c.id[:12])
        return 0
    now = time.time()
    rows = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")]
    rows += [(c.id[:12], c.image, _short(shlex.join(c.command)),
              humanize_duration(now - c.created) + " ago", _status(c, running), c.name)
             for c in containers]
    sys.stdout.write(format_table(rows))
    return 0


def _short(text: str, width: int = 20) -> str:
    return f'"{text}"' if len(text) <= width else f'"{text[:width - 1]}…"'


def rm(args: argparse.Namespace, store: Store) -> int:
    conn = hypervisor.connect(hypervisor.uri_from_env(args.connect))
    failure: HyperrunError | None = None
    try:
        for ref in args.containers:
            try:
                _remove_one(conn, store, ref, args.force)
                print(ref)
            except HyperrunError as exc:
                if failure is not None:
                    log.error(failure.message, failure.hint)
                failure = exc
    finally:
        conn.close()
    if failure is not None:
        raise failure
    return 0


def _remove_one(conn: libvirt.virConnect, store: Store, ref: str, force: bool) -> None:
    c = state.find(store, ref)
    if c.domain in _running(conn):
        if not force:
            raise UsageError(f"container {c.name} is running",
                             hint="stop it first, or use `hyperrun rm -f`")
        hypervisor.destroy(conn.lookupByName(c.domain))
        hypervisor.wait_gone(conn, c.domain, timeout=30.0)
    state.remove_files(store, c)
