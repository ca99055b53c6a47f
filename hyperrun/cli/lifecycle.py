"""The verbs of a container's life after `run`: exec, attach, logs, stop, kill, start, restart.

`exec` and `attach` into a running container need no libvirt (containers/exec.py), so
what only the other verbs need (libvirt, the verbs' shared loop) is imported by them:
an exec is an RPC, and Python's imports are most of its cost.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from hyperrun.cli.envfile import env_entries
from hyperrun.cli.terminal import UserTerminal
from hyperrun.containers import exec as exec_mod
from hyperrun.containers import logs, records
from hyperrun.errors import UsageError
from hyperrun.store import Store
from hyperrun.vm.uri import uri_from_env

if TYPE_CHECKING:
    import libvirt


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("exec", help="run a command in a running container")
    p.add_argument("-d", "--detach", action="store_true", help="run it in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set an environment variable")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read KEY=VALUE lines from a file")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="user[:group] or uid[:gid]")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    p.set_defaults(func=exec_verb)

    p = subparsers.add_parser("attach", help="attach to a running container's main process")
    p.add_argument("--no-stdin", action="store_true", help="do not pass our stdin on")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=attach_verb)

    p = subparsers.add_parser("logs", help="show a container's output")
    p.add_argument("-f", "--follow", action="store_true", help="follow new output")
    p.add_argument("-n", "--tail", default="all", help="only the last N lines")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("--since", help="only output since a time (RFC 3339, Unix seconds, or "
                                   "a duration such as 10m)")
    p.add_argument("--until", help="only output before a time")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=logs_verb)

    for verb, what in (("stop", "stop running containers (SIGTERM, then SIGKILL)"),
                       ("restart", "stop, then start containers")):
        p = subparsers.add_parser(verb, help=what)
        p.add_argument("-t", "--time", type=int, default=10, metavar="SECONDS",
                       help="seconds to wait before killing (default 10)")
        p.add_argument("-s", "--signal", default="SIGTERM", help="signal to stop with")
        p.add_argument("--connect", help="libvirt URI")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=stop_verb if verb == "stop" else restart_verb)

    p = subparsers.add_parser("kill", help="send a signal to containers' main processes")
    p.add_argument("-s", "--signal", default="SIGKILL", help="signal (default SIGKILL)")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=kill_verb)

    p = subparsers.add_parser("start", help="start stopped containers again")
    p.add_argument("-a", "--attach", action="store_true", help="attach to its output")
    p.add_argument("-i", "--interactive", action="store_true", help="attach its stdin")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=start_verb)


def parse_signal(text: str) -> int:
    """A signal by number or name, with or without SIG (docker's -s)."""
    name = text.strip().upper()
    if name.isdigit() and 0 < int(name) < signal.NSIG:
        return int(name)
    try:
        return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])
    except KeyError:
        raise UsageError(f"invalid signal {text!r}",
                         hint="give a name such as TERM, KILL, HUP or a number") from None


def _uri(args: argparse.Namespace) -> str:
    return uri_from_env(args.connect)


def _connect(args: argparse.Namespace) -> libvirt.virConnect:
    from hyperrun.vm import hypervisor

    return hypervisor.connect(_uri(args))


def exec_verb(args: argparse.Namespace, store: Store) -> int:
    c = records.find(store, args.container)
    spec = exec_mod.exec_spec(c, tuple(args.command), env_entries(args), args.workdir,
                              args.user, args.tty, args.interactive)
    return exec_mod.exec_in(store, c.id, spec, uri=_uri(args), detach=args.detach,
                            terminal=UserTerminal() if args.tty else None)


def attach_verb(args: argparse.Namespace, store: Store) -> int:
    return exec_mod.attach(store, args.container, _uri(args), UserTerminal(),
                           stdin=not args.no_stdin)


def stop_verb(args: argparse.Namespace, store: Store) -> int:
    from hyperrun.cli.containers import each_container
    from hyperrun.containers import control

    signum = parse_signal(args.signal)

    def act(conn: libvirt.virConnect, ref: str) -> str:
        control.stop(conn, store, ref, max(0, args.time), signum)
        return ref
    return each_container(args, act)


def restart_verb(args: argparse.Namespace, store: Store) -> int:
    from hyperrun.cli.containers import each_container
    from hyperrun.containers import control

    signum = parse_signal(args.signal)

    def act(conn: libvirt.virConnect, ref: str) -> str:
        control.stop(conn, store, ref, max(0, args.time), signum)
        control.start(conn, store, ref)
        return ref
    return each_container(args, act)


def kill_verb(args: argparse.Namespace, store: Store) -> int:
    from hyperrun.cli.containers import each_container
    from hyperrun.containers import control

    signum = parse_signal(args.signal)

    def act(conn: libvirt.virConnect, ref: str) -> str:
        control.kill(conn, store, ref, signum)
        return ref
    return each_container(args, act)


def start_verb(args: argparse.Namespace, store: Store) -> int:
    from hyperrun.cli.containers import each_container
    from hyperrun.containers import control

    if (args.attach or args.interactive) and len(args.containers) > 1:
        raise UsageError("you cannot start and attach multiple containers at once",
                         hint="start them one by one with -a")
    if not (args.attach or args.interactive):
        def act(conn: libvirt.virConnect, ref: str) -> str:
            control.start(conn, store, ref)
            return ref
        return each_container(args, act)
    conn = _connect(args)
    try:
        c = control.start(conn, store, args.containers[0])
    finally:
        conn.close()
    return exec_mod.attach(store, c.id, _uri(args), UserTerminal(), stdin=args.interactive)


# -- logs ------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_time(text: str, now: float) -> float:
    """--since/--until: RFC 3339, Unix seconds, or a duration ago (docker's forms)."""
    t = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = _DURATION.findall(t)
    if parts and "".join(n + u for n, u in parts) == t:
        return now - sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        when = datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"invalid time {text!r}",
                         hint="use 2026-01-02T15:04:05Z, Unix seconds, or a duration "
                              "such as 10m or 1h30m") from None
    if when.tzinfo is None:
        when = when.astimezone()  # docker reads a time without zone as local time
    return when.timestamp()


def _stamp(ns: int) -> bytes:
    seconds, frac = divmod(ns, 10**9)
    day = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{day:%Y-%m-%dT%H:%M:%S}.{frac:09d}Z ".encode()


def logs_verb(args: argparse.Namespace, store: Store) -> int:
    from hyperrun.containers import lifecycle
    from hyperrun.containers.lifecycle import State

    conn = _connect(args)
    try:
        c = records.find(store, args.container)
        now = time.time()
        since = parse_time(args.since, now) * 1e9 if args.since else None
        until = parse_time(args.until, now) * 1e9 if args.until else None
        if args.tail != "all" and not (args.tail.isdigit()):
            raise UsageError(f"invalid --tail {args.tail!r}", hint="a number of lines, or all")
        files = records.paths(store, c.id)

        def ended() -> bool:
            _, state = lifecycle.refresh(conn, store, records.find(store, c.id))
            return state is State.EXITED

        stream = (logs.follow(files, ended) if args.follow
                  else logs.read_all(files))
        if args.tail != "all":
            stream = _tail(files, int(args.tail), stream, args.follow, ended)
        out = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
        at_line_start = {"stdout": True, "stderr": True}
        for record in stream:
            if since is not None and record.time_ns < since:
                continue
            if until is not None and record.time_ns >= until:
                if args.follow:
                    break
                continue
            sink = out[record.stream]
            if args.timestamps and at_line_start[record.stream]:
                sink.write(_stamp(record.time_ns))
            sink.write(record.data)
            at_line_start[record.stream] = record.data.endswith(b"\n")
            if args.follow:
                sink.flush()
        return 0
    finally:
        conn.close()


def _tail(files: records.Paths, n: int, stream: Iterator[logs.Record], follow: bool,
          ended: Callable[[], bool]) -> Iterator[logs.Record]:
    """The last n records of what is there now, then (with -f) everything new."""
    kept: collections.deque[logs.Record] = collections.deque(maxlen=n or 1)
    if not follow:
        for record in stream:
            kept.append(record)
        yield from (kept if n else ())
        return
    # Following: the backlog from read_all, then only what comes after it. Records cut
    # from one piece of output share a timestamp, so those are counted, not compared.
    last, same = -1, 0
    for record in logs.read_all(files):
        kept.append(record)
        last, same = record.time_ns, (same + 1 if record.time_ns == last else 1)
    yield from (kept if n else ())
    for record in stream:
        if record.time_ns < last:
            continue
        if record.time_ns == last and same > 0:
            same -= 1
            continue
        yield record
