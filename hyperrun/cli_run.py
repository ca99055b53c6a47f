"""`hyperrun run`: options in, RunSpec out."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import config, container, hypervisor
from .errors import UsageError
from .spec import Accel, PullPolicy, RunSpec
from .store import Store


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("run", help="run a command in a new container (one VM)",
                         description="Run a command in a new container, inside its own VM.")
    p.add_argument("--rm", dest="remove", action="store_true",
                   help="remove the container (overlay, state) when it exits")
    p.add_argument("--name", help="name the container")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set an environment variable (KEY alone copies it from here)")
    p.add_argument("--env-file", action="append", default=[], type=Path, metavar="FILE",
                   help="read KEY=VALUE lines from a file")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="user[:group] or uid[:gid]")
    p.add_argument("--entrypoint", help="override the image's entrypoint")
    p.add_argument("--hostname", help="the container's host name")
    p.add_argument("--cpus", help="virtual CPUs (default: run.cpus in config.yaml, else 1)")
    p.add_argument("--memory", "-m",
                   help="guest RAM, the memory limit (default: run.memory in config.yaml, "
                        "else 512m)")
    p.add_argument("--pull", choices=[policy.value for policy in PullPolicy],
                   default=PullPolicy.MISSING.value,
                   help="pull the image: missing (default), always or never")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the pull output")
    p.add_argument("--accel", choices=[a.value for a in Accel], default=Accel.AUTO.value,
                   help="kvm, tcg (software emulation) or auto (default)")
    p.add_argument("--kernel", type=Path, help="boot this guest kernel instead")
    p.add_argument("--connect", help="libvirt URI (default $HYPERRUN_CONNECT or qemu:///system)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    p.set_defaults(func=_run)


def _env_entries(args: argparse.Namespace) -> tuple[str, ...]:
    entries: list[str] = []
    for path in args.env_file:
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read --env-file {path}: {exc.strerror}",
                             hint="give a readable file of KEY=VALUE lines") from None
        entries += [line for line in text.splitlines() if line.strip() and
                    not line.lstrip().startswith("#")]
    entries += args.env
    out = []
    for entry in entries:
        key, sep, _ = entry.partition("=")
        if not key or any(c.isspace() for c in key) or "\0" in entry:
            raise UsageError(f"invalid environment variable {entry!r}",
                             hint="use KEY=VALUE, or KEY to copy it from this environment")
        if sep:
            out.append(entry)
        elif key in os.environ:  # docker copies a bare KEY from the caller, if set
            out.append(f"{key}={os.environ[key]}")
    return tuple(out)


def _entrypoint(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if value else ()


def to_spec(args: argparse.Namespace) -> RunSpec:
    defaults = config.load()  # config.yaml supplies --cpus and --memory; flags win
    return RunSpec(
        image=args.image,
        command=tuple(args.command),
        entrypoint=_entrypoint(args.entrypoint),
        env=_env_entries(args),
        workdir=args.workdir,
        user=args.user,
        hostname=args.hostname,
        name=args.name,
        tty=args.tty,
        interactive=args.interactive,
        remove=args.remove,
        cpus=container.parse_cpus(args.cpus or defaults.cpus or "1"),
        memory_mib=container.parse_memory(args.memory or defaults.memory or "512m"),
        accel=Accel(args.accel),
        kernel=args.kernel,
        pull=PullPolicy(args.pull),
        quiet=args.quiet,
    )


def _run(args: argparse.Namespace, store: Store) -> int:
    return container.run(to_spec(args), store, hypervisor.uri_from_env(args.connect))
