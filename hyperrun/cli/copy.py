"""The verbs that use the agent's own tools in a running container: cp and top."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from hyperrun import log
from hyperrun.cli.table import format_table
from hyperrun.containers import copy, top
from hyperrun.errors import UsageError
from hyperrun.store import Store
from hyperrun.vm.uri import uri_from_env


@dataclass(frozen=True)
class Endpoint:
    """One side of `cp`: a host path (container None) or CONTAINER:PATH; `-` is a stream."""

    path: str
    container: str | None = None


def parse_endpoint(arg: str) -> Endpoint:
    """docker's rule: a path that starts with `/` or `.` is local even if it has a colon."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return Endpoint(arg)
    name, _, path = arg.partition(":")
    if not name:
        return Endpoint(arg)
    return Endpoint(path, name)


def parse_args(src: str, dest: str) -> tuple[Endpoint, Endpoint]:
    s, d = parse_endpoint(src), parse_endpoint(dest)
    if s.container and d.container:
        raise UsageError("copying between containers is not supported",
                         hint="copy to the host first, then into the other container")
    if not s.container and not d.container:
        raise UsageError("must specify at least one container source",
                         hint="hyperrun cp CONTAINER:SRC_PATH DEST_PATH or "
                              "hyperrun cp SRC_PATH CONTAINER:DEST_PATH")
    for e in (s, d):
        if e.container is not None and not e.path:
            raise UsageError(f"no path given after {e.container}:",
                             hint="write CONTAINER:/path/in/container")
        if not e.path:
            raise UsageError("an empty path", hint="give a path, or - for a tar stream")
    return s, d


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


def _uri(args: argparse.Namespace) -> str:
    return uri_from_env(args.connect)


def cp_verb(args: argparse.Namespace, store: Store) -> int:
    src, dest = parse_args(args.src, args.dest)
    if src.container is not None:
        skipped = copy.copy_out(_uri(args), store, src.container, src.path, dest.path,
                                archive=args.archive)
        if skipped:
            log.warning(f"left out {len(skipped)} entries: {', '.join(skipped[:3])}"
                        + (" ..." if len(skipped) > 3 else ""))
    else:
        assert dest.container is not None
        copy.copy_in(_uri(args), store, src.path, dest.container, dest.path,
                     archive=args.archive)
    return 0


def top_verb(args: argparse.Namespace, store: Store) -> int:
    rows = top.top(_uri(args), store, args.container, tuple(args.ps_args))
    if rows:
        sys.stdout.write(format_table([[log.escape(cell) for cell in row] for row in rows]))
    return 0
