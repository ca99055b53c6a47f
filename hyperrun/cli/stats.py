"""`hyperrun stats`: docker's live table of what running containers use."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from hyperrun import log
from hyperrun.cli.format import Template, print_rows, unescape
from hyperrun.cli.table import format_table, human_size
from hyperrun.containers import stats
from hyperrun.containers.stats import Usage
from hyperrun.errors import ContainerNotFound, NoSuchObject
from hyperrun.store import Store
from hyperrun.vm import hypervisor

# docker's column titles, for the default table and `--format 'table ...'`.
HEADERS = {"ID": "CONTAINER ID", "Name": "NAME", "Container": "CONTAINER", "CPUPerc": "CPU %",
           "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O",
           "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}
COLUMNS = ("ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs")
INTERVAL = 1.0  # seconds between two samples, and between two frames of the live table
CLEAR = "\x1b[2J\x1b[H"  # what docker writes before each frame on a terminal


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("stats", help="show what running containers use, live")
    p.add_argument("--no-stream", action="store_true", help="print one table and exit")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate IDs")
    p.add_argument("--format", metavar="FORMAT",
                   help="json (one object a line), or a template such as "
                        "'{{.Name}} {{.CPUPerc}}'")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("containers", nargs="*", metavar="CONTAINER",
                   help="default: every running container")
    p.set_defaults(func=stats_verb)


def binary_size(size: float) -> str:
    """docker's BytesSize (go-units): binary units, 4 digits, e.g. `1.5MiB`, `192MiB`."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while size >= 1024 and i < len(units) - 1:
        size /= 1024
        i += 1
    return f"{size:.4g}{units[i]}"


def row(u: Usage, given: str, trunc: bool) -> dict[str, Any]:
    c = u.container
    percent = u.memory / u.memory_limit * 100 if u.memory_limit else 0.0
    return {
        "ID": c.id[:12] if trunc else c.id, "Name": c.name, "Container": given or c.id[:12],
        "CPUPerc": f"{u.cpu_percent:.2f}%",
        "MemUsage": f"{binary_size(u.memory)} / {binary_size(u.memory_limit)}",
        "MemPerc": f"{percent:.2f}%",
        "NetIO": "0B / 0B",  # no networking yet
        "BlockIO": f"{human_size(u.read)} / {human_size(u.written)}",
        # The agent does not report its process count yet; a stopped container has none.
        "PIDs": "--" if u.running else "0",
    }


def _custom(fmt: str | None) -> str | None:
    """The --format asked for, None for docker's table; a bad template fails here, at once."""
    if not fmt or fmt.strip() == "table":
        return None
    if fmt != "json":
        Template.parse(unescape(fmt.removeprefix("table").strip()))
    return fmt


def _show(rows: list[dict[str, Any]], fmt: str | None) -> None:
    if fmt is not None:
        print_rows(rows, fmt, HEADERS)
        return
    table = [tuple(HEADERS[k] for k in COLUMNS)]
    table += [tuple(log.escape(r[k], 1 << 20) for k in COLUMNS) for r in rows]
    sys.stdout.write(format_table(table))


def stats_verb(args: argparse.Namespace, store: Store) -> int:
    fmt = _custom(args.format)
    conn = hypervisor.connect(hypervisor.uri_from_env(args.connect))
    try:
        try:
            chosen = stats.chosen(conn, store, args.containers)
        except ContainerNotFound as exc:
            raise NoSuchObject(exc.ref, "container") from None  # as docker: exit 1
        meter = stats.Meter(conn, store)
        given = dict(zip((c.id for c in chosen), args.containers, strict=False))
        clear = sys.stdout.isatty() and not args.no_stream
        while True:
            started = time.monotonic()
            usages = meter.read(chosen, INTERVAL)
            rows = [row(u, given.get(u.container.id, ""), not args.no_trunc) for u in usages]
            sys.stdout.write(CLEAR if clear else "")
            _show(rows, fmt)
            sys.stdout.flush()
            if args.no_stream:
                return 0
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))
            if not args.containers:  # the running set changes: containers start and end
                chosen = stats.chosen(conn, store, [])
    finally:
        conn.close()
