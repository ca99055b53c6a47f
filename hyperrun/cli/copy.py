"""The verbs that use the agent's own tools in a running container: cp and top."""

from __future__ import annotations

import argparse
import sys

import libvirt

from hyperrun import log
from hyperrun.cli.table import format_table
from hyperrun.containers import copy, top
from hyperrun.store import Store
from hyperrun.vm import hypervisor


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "cp", help="copy files between a running container and the host",
        description="hyperrun cp [-a] CONTAINER:SRC_PATH DEST_PATH|-  or  "
                    "hyperrun cp [-a] SRC_PATH|- CONTAINER:DEST_PATH")
    p.add_argument("-a", "--archive", action="store_true",
                   help="keep the owners of the source (default: root in the container, "
                        "you on the host)")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", metavar="DEST")
    p.set_defaults(func=cp_verb)

    p = subparsers.add_parser("top", help="show the processes of a running container")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="[ps OPTIONS]",
                   help="options for busybox ps (default: -o user,pid,ppid,stat,tty,args)")
    p.set_defaults(func=top_verb)


def _connect(args: argparse.Namespace) -> libvirt.virConnect:
    return hypervisor.connect(hypervisor.uri_from_env(args.connect))


def cp_verb(args: argparse.Namespace, store: Store) -> int:
    src, dest = copy.parse_args(args.src, args.dest)
    conn = _connect(args)
    try:
        if src.container is not None:
            skipped = copy.copy_out(conn, store, src.container, src.path, dest.path,
                                    archive=args.archive)
            if skipped:
                log.warning(f"left out {len(skipped)} entries: {', '.join(skipped[:3])}"
                         + (" ..." if len(skipped) > 3 else ""))
        else:
            assert dest.container is not None
            copy.copy_in(conn, store, src.path, dest.container, dest.path,
                         archive=args.archive)
        return 0
    finally:
        conn.close()


def top_verb(args: argparse.Namespace, store: Store) -> int:
    conn = _connect(args)
    try:
        rows = top.top(conn, store, args.container, tuple(args.ps_args))
    finally:
        conn.close()
    if rows:
        sys.stdout.write(format_table([[log.escape(cell) for cell in row] for row in rows]))
    return 0
