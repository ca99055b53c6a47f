"""The container verbs: ps, rm and rename."""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import libvirt

from hyperrun import log
from hyperrun import reference as references
from hyperrun.cli.format import print_rows
from hyperrun.cli.table import format_table, humanize_duration
from hyperrun.containers import lifecycle, network, status, volumes
from hyperrun.containers import records as state_mod
from hyperrun.containers.lifecycle import State
from hyperrun.errors import EXIT_FAILURE, HyperrunError, ImageNotFound, UsageError
from hyperrun.images.store import ImageStore
from hyperrun.store import Store
from hyperrun.vm import hypervisor

# docker's column titles for `ps --format 'table ...'`.
PS_HEADERS = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED", "Status": "STATUS", "State": "STATE", "Names": "NAMES",
    "Ports": "PORTS", "Mounts": "MOUNTS", "Networks": "NETWORKS", "Labels": "LABELS",
    "LocalVolumes": "LOCAL VOLUMES", "CPUs": "CPUS", "Memory": "MEMORY",
}
# Every state docker's status filter accepts; hyperrun's containers are only ever in four.
DOCKER_STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
FILTER_KEYS = ("status", "name", "ancestor", "id")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="show stopped containers too")
    p.add_argument("-q", "--quiet", action="store_true", help="only show container IDs")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate IDs and commands")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="status=, name= (a regular expression), ancestor= (an image) or id= "
                        "(a prefix); repeat to OR values of one key, AND different keys")
    p.add_argument("--format", metavar="FORMAT",
                   help="json (one object a line), or a template such as '{{.Names}}'")
    p.add_argument("--connect", help="libvirt URI")
    p.set_defaults(func=ps)

    p = subparsers.add_parser("rm", help="remove one or more containers")
    p.add_argument("-f", "--force", action="store_true", help="stop a running container first")
    p.add_argument("-v", "--volumes", action="store_true",
                   help="remove the container's anonymous volumes too")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=rm)

    p = subparsers.add_parser("port", help="list a container's published ports")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("private", nargs="?", metavar="PRIVATE_PORT[/PROTO]",
                   help="only this port of the container (tcp unless /udp)")
    p.set_defaults(func=port)

    p = subparsers.add_parser("rename", help="rename a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("new_name", metavar="NEW_NAME")
    p.set_defaults(func=rename)


def docker_status(s: status.Status, now: float) -> str:
    """The STATUS column as docker words it: `Up 3 minutes`, `Exited (0) 2 seconds ago`."""
    c = s.container
    if s.running:
        up = "Up " + humanize_duration(now - (c.started or c.created))
        return up + " (Paused)" if s.state is State.PAUSED else up
    if s.state is State.EXITED:
        ended = f"Exited ({c.exit_status})"
        return ended + (f" {humanize_duration(now - c.finished)} ago" if c.finished else "")
    return "Created"


def _created_at(when: float) -> str:
    # Go's time.String(), which docker prints: "2026-11-29 15:40:55 +0000 UTC".
    return datetime.datetime.fromtimestamp(when).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z")


def _row(s: status.Status, now: float, trunc: bool) -> dict[str, Any]:
    c, cfg = s.container, s.container.settings
    command = " ".join(c.args)
    return {
        "ID": c.id[:12] if trunc else c.id, "Image": c.image,
        "Command": _short(command) if trunc else f'"{command}"',
        "CreatedAt": _created_at(c.created), "RunningFor": humanize_duration(now - c.created)
        + " ago", "Status": docker_status(s, now), "State": s.docker_state, "Names": c.name,
        "Ports": ", ".join(map(str, network.ports_of(cfg.ports))) if s.running else "",
        "Mounts": "", "Networks": "", "Labels": "", "LocalVolumes": "0",
        "CPUs": str(cfg.cpus) if cfg.cpus else "",
        "Memory": f"{cfg.memory_mib}MiB" if cfg.memory_mib else "",
    }


def parse_filters(specs: list[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep:
            raise UsageError(f"bad filter {spec!r}", hint="use KEY=VALUE, e.g. status=exited")
        if key not in FILTER_KEYS:
            raise UsageError(f"invalid filter {key!r}", hint="use " + ", ".join(FILTER_KEYS))
        if key == "status" and value not in DOCKER_STATES:
            raise UsageError(f"invalid filter 'status={value}'",
                             hint="status is one of " + ", ".join(DOCKER_STATES))
        if key == "name":
            try:
                re.compile(value)
            except re.error as exc:
                raise UsageError(f"invalid filter 'name={value}': {exc}",
                                 hint="name= takes a regular expression") from None
        filters.setdefault(key, []).append(value)
    return filters


def _ancestor_matcher(store: Store, value: str) -> Callable[[state_mod.Container], bool]:
    """A container descends from value if it was run as that reference or that image."""
    try:
        wanted = str(references.parse(value))
    except UsageError:
        wanted = value
    try:
        image_id = ImageStore(store).get(value).id
    except (ImageNotFound, UsageError):
        image_id = None

    def matches(c: state_mod.Container) -> bool:
        try:
            given = str(references.parse(c.image))
        except UsageError:
            given = c.image
        return given == wanted or c.image_id == image_id
    return matches


def _keep(filters: dict[str, list[str]], store: Store) -> Callable[[status.Status], bool]:
    ancestors = [_ancestor_matcher(store, v) for v in filters.get("ancestor", [])]

    def keep(s: status.Status) -> bool:
        c = s.container
        checks = {
            "status": lambda v: s.docker_state == v,
            "name": lambda v: bool(re.search(v, c.name) or re.search(v, "/" + c.name)),
            "id": lambda v: c.id.startswith(v),
        }
        if ancestors and not any(m(c) for m in ancestors):
            return False
        return all(any(checks[k](v) for v in vs) for k, vs in filters.items() if k in checks)
    return keep


def ps(args: argparse.Namespace, store: Store) -> int:
    filters = parse_filters(args.filter)
    conn = hypervisor.connect(hypervisor.uri_from_env(args.connect))
    try:
        listed = status.all_statuses(conn, store)
    finally:
        conn.close()
    for s in listed:
        if s.was_killed:
            log.warning(f"container {s.container.name}: {s.container.error}; "
                        f"recorded as exited with status {s.container.exit_status}")
    # As docker: only running containers unless -a, or unless a status filter asks.
    if not args.all and "status" not in filters:
        listed = [s for s in listed if s.running]
    keep = _keep(filters, store)
    listed = [s for s in listed if keep(s)]
    if args.quiet:
        for s in listed:
            print(s.container.id if args.no_trunc else s.container.id[:12])
        return 0
    now = time.time()
    rows = [_row(s, now, trunc=not args.no_trunc) for s in listed]
    if args.format and args.format.strip() != "table":  # bare `table` is the default
        print_rows(rows, args.format, PS_HEADERS)
        return 0
    columns = ("ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names")
    table = [tuple(PS_HEADERS[k] for k in columns)]
    table += [tuple(log.escape(row[k], 1 << 20) for k in columns) for row in rows]
    sys.stdout.write(format_table(table))
    return 0


def _short(text: str, width: int = 20) -> str:
    return f'"{text}"' if len(text) <= width else f'"{text[:width - 1]}…"'


def rm(args: argparse.Namespace, store: Store) -> int:
    def act(conn: libvirt.virConnect, ref: str) -> str:
        c = state_mod.find(store, ref)
        lifecycle.remove(conn, store, c, args.force)
        if args.volumes:
            volumes.remove_anonymous(store, volumes.anonymous_of(c))
        return ref
    return each_container(args, act)


def each_container(args: argparse.Namespace,
                   act: Callable[[libvirt.virConnect, str], str]) -> int:
    """act on every container named, as docker does: what works is printed, each failure
    is one line on stderr, and the last failure's status is the command's."""
    conn = hypervisor.connect(hypervisor.uri_from_env(args.connect))
    failure: HyperrunError | None = None
    try:
        for ref in args.containers:
            try:
                print(log.escape(act(conn, ref)), flush=True)
            except HyperrunError as exc:
                if failure is not None:
                    log.error(failure.message, failure.hint)
                failure = exc
    finally:
        conn.close()
    if failure is not None:
        raise failure
    return 0


def rename(args: argparse.Namespace, store: Store) -> int:
    state_mod.rename(store, args.container, args.new_name)
    return 0


def port(args: argparse.Namespace, store: Store) -> int:
    """docker port: `80/tcp -> 127.0.0.1:8080` per published port, or one port's host ends."""
    c = state_mod.find(store, args.container)
    ports = network.ports_of(c.settings.ports)
    if args.private is None:
        for p in ports:
            print(f"{p.container_port}/{p.protocol} -> {p.host_ip}:{p.host_port}")
        return 0
    number, _, proto = args.private.partition("/")
    proto = proto or "tcp"
    found = [p for p in ports if str(p.container_port) == number and p.protocol == proto]
    if not found:
        raise NoSuchPort(f"Error: No public port '{number}/{proto}' published for {c.name}",
                         hint=f"see `hyperrun port {c.name}`")
    for p in found:
        print(f"{p.host_ip}:{p.host_port}")
    return 0


class NoSuchPort(HyperrunError):
    status = EXIT_FAILURE  # as docker's
