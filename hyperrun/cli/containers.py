"""The container verbs: ps and rm."""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import libvirt

from hyperrun import log
from hyperrun.cli.table import format_table, humanize_duration
from hyperrun.containers import lifecycle
from hyperrun.containers import records as state_mod
from hyperrun.errors import HyperrunError
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


def _status(state: lifecycle.State, c: state_mod.Container) -> str:
    if state is lifecycle.State.EXITED:
        return f"Exited ({c.exit_status})"
    return state.value


def ps(args: argparse.Namespace, store: Store) -> int:
    conn = hypervisor.connect(hypervisor.uri_from_env(args.connect))
    listed = []
    try:
        if store.containers.is_dir():
            state_mod.sweep(store)
        for old in state_mod.all_containers(store):
            c, st = lifecycle.refresh(conn, store, old)
            if old.exit_status is None and c.exit_status is not None:
                log.warning(f"container {c.name}: {c.error}; "
                            f"recorded as exited with status {c.exit_status}")
            listed.append((c, st))
    finally:
        conn.close()
    listed.sort(key=lambda entry: entry[0].created, reverse=True)
    if not args.all:
        listed = [(c, st) for c, st in listed if st is lifecycle.State.UP]
    if args.quiet:
        for c, _ in listed:
            print(c.id[:12])
        return 0
    now = time.time()
    rows = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")]
    rows += [(c.id[:12], c.image, _short(shlex.join(c.command)),
              humanize_duration(now - c.created) + " ago", _status(st, c), c.name)
             for c, st in listed]
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
    lifecycle.remove(conn, store, state_mod.find(store, ref), force)
