"""Verbs on containers that run, wherever their `hyperrun run` is: pause, unpause, wait."""

from __future__ import annotations

import argparse

import libvirt

from hyperrun.cli.containers import each_container
from hyperrun.containers import pause as pausing
from hyperrun.containers import records, wait
from hyperrun.errors import ContainerNotFound, NoSuchObject
from hyperrun.store import Store


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


def pause(args: argparse.Namespace, store: Store) -> int:
    def act(conn: libvirt.virConnect, ref: str) -> str:
        pausing.pause(conn, store, ref)
        return ref
    return each_container(args, act)


def unpause(args: argparse.Namespace, store: Store) -> int:
    def act(conn: libvirt.virConnect, ref: str) -> str:
        pausing.unpause(conn, store, ref)
        return ref
    return each_container(args, act)


def wait_verb(args: argparse.Namespace, store: Store) -> int:
    def act(conn: libvirt.virConnect, ref: str) -> str:
        try:
            c = records.find(store, ref)
        except ContainerNotFound:
            raise NoSuchObject(ref, "container") from None  # docker's words; exit 1
        return str(wait.until_exited(conn, store, c))
    return each_container(args, act)
