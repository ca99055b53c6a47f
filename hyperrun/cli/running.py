"""Verbs on containers that run, wherever their `hyperrun run` is: pause, unpause, wait."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import libvirt

from hyperrun import log
from hyperrun.containers import pause as pausing
from hyperrun.containers import records, wait
from hyperrun.errors import ContainerNotFound, HyperrunError, NoSuchObject
from hyperrun.store import Store
from hyperrun.vm import hypervisor


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for verb, func, what in (("pause", pause, "stop every process of containers, in place"),
                             ("unpause", unpause, "resume paused containers")):
        p = subparsers.add_parser(verb, help=what)
        p.add_argument("--connect", help="libvirt URI")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=func)

    p = subparsers.add_parser("wait", help="block until containers stop, print their exit "
                                           "statuses")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=wait_verb)


def _each(args: argparse.Namespace, store: Store,
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


def pause(args: argparse.Namespace, store: Store) -> int:
    def act(conn: libvirt.virConnect, ref: str) -> str:
        pausing.pause(conn, store, ref)
        return ref
    return _each(args, store, act)


def unpause(args: argparse.Namespace, store: Store) -> int:
    def act(conn: libvirt.virConnect, ref: str) -> str:
        pausing.unpause(conn, store, ref)
        return ref
    return _each(args, store, act)


def wait_verb(args: argparse.Namespace, store: Store) -> int:
    def act(conn: libvirt.virConnect, ref: str) -> str:
        try:
            c = records.find(store, ref)
        except ContainerNotFound:
            raise NoSuchObject(ref, "container") from None  # docker's words; exit 1
        return str(wait.until_exited(conn, store, c))
    return _each(args, store, act)
