"""`hyperrun volume create|ls|inspect|rm|prune`: named volumes, in docker's output shapes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from hyperrun import log
from hyperrun.cli import prune as cli_prune
from hyperrun.cli.inspect import rfc3339
from hyperrun.cli.table import format_table, human_size
from hyperrun.containers import volumes
from hyperrun.errors import HyperrunError, UsageError
from hyperrun.store import Store


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = subparsers.add_parser("volume", help="manage volumes (create, ls, inspect, rm, prune)")
    verbs = group.add_subparsers(dest="volume_verb", metavar="COMMAND", parser_class=type(group))
    verbs.required = True

    p = verbs.add_parser("create", help="create a volume")
    p.add_argument("name", nargs="?", metavar="VOLUME", help="its name (default: a random one)")
    p.set_defaults(func=create)

    p = verbs.add_parser("ls", aliases=["list"], help="list volumes")
    p.add_argument("-q", "--quiet", action="store_true", help="only show volume names")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="dangling=true|false (not used by any container) or name=TEXT "
                        "(part of the name)")
    p.set_defaults(func=ls)

    p = verbs.add_parser("inspect", help="show volumes as JSON")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(func=inspect)

    p = verbs.add_parser("rm", aliases=["remove"], help="remove volumes no container uses")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(func=rm)

    p = verbs.add_parser("prune", help="remove unused anonymous volumes (-a: every unused one)")
    p.add_argument("-a", "--all", action="store_true", help="named volumes too")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.set_defaults(func=prune)


def create(args: argparse.Namespace, store: Store) -> int:
    print(volumes.create(store, args.name).name)
    return 0


def _filters(specs: list[str]) -> tuple[bool | None, str]:
    dangling: bool | None = None
    name = ""
    hint = "use --filter dangling=true|false or --filter name=TEXT"
    for spec in specs:
        key, _, value = spec.partition("=")
        if key == "dangling" and value.lower() in ("true", "1", "false", "0"):
            dangling = value.lower() in ("true", "1")
        elif key == "name":
            name = value
        else:
            raise UsageError(f"invalid filter {spec[:100]!r}", hint=hint)
    return dangling, name


def ls(args: argparse.Namespace, store: Store) -> int:
    dangling, name = _filters(args.filter)
    used = volumes.users(store)
    rows = [v for v in volumes.all_volumes(store)
            if name in v.name and (dangling is None or dangling == (v.name not in used))]
    if args.quiet:
        for v in rows:
            print(v.name)
        return 0
    print(format_table([("DRIVER", "VOLUME NAME"), *(("local", v.name) for v in rows)]), end="")
    return 0


def volume_doc(v: volumes.Volume) -> dict[str, Any]:
    """A volume as `docker volume inspect` shows it."""
    return {"CreatedAt": rfc3339(v.created), "Driver": "local",
            "Labels": {"com.docker.volume.anonymous": ""} if v.anonymous else None,
            "Mountpoint": str(v.data), "Name": v.name, "Options": None, "Scope": "local"}


def _each(names: list[str], act: Callable[[str], None]) -> None:
    """act on every name; as docker, carry on after a failure, report each on one line
    and leave the last one (and its status) to the top level."""
    failures: list[HyperrunError] = []
    for name in names:
        try:
            act(name)
        except HyperrunError as exc:
            failures.append(exc)
    for failure in failures[:-1]:
        log.error(failure.message, failure.hint)
    if failures:
        raise failures[-1]


def inspect(args: argparse.Namespace, store: Store) -> int:
    docs: list[dict[str, Any]] = []
    try:
        _each(args.names, lambda name: docs.append(volume_doc(volumes.get(store, name))))
    finally:
        print(json.dumps(docs, indent=4))
    return 0


def rm(args: argparse.Namespace, store: Store) -> int:
    def remove(name: str) -> None:
        volumes.remove(store, name)
        print(log.escape(name))

    _each(args.names, remove)
    return 0


def prune(args: argparse.Namespace, store: Store) -> int:
    what = "all local volumes" if args.all else "anonymous local volumes"
    cli_prune.confirm(f"WARNING! This will remove {what} not used by at least one container.",
                      args.force, "volume prune")
    removed, reclaimed = volumes.prune(store, args.all)
    if removed:
        print("Deleted Volumes:\n" + "".join(f"{name}\n" for name in removed))
    print(f"Total reclaimed space: {human_size(reclaimed, 4)}")
    return 0
