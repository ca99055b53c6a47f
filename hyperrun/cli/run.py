"""`hyperrun run`: options in, RunSpec out."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from hyperrun import capabilities, config
from hyperrun.cli.envfile import env_entries
from hyperrun.cli.terminal import UserTerminal
from hyperrun.containers import mounts, network, restart
from hyperrun.containers import run as container
from hyperrun.containers.names import validate_name
from hyperrun.errors import UsageError
from hyperrun.images.model import Image
from hyperrun.spec import Accel, PullPolicy, RunSpec
from hyperrun.store import Store
from hyperrun.vm import hypervisor


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("run", help="run a command in a new container (one VM)",
                         description="Run a command in a new container, inside its own VM.")
    p.add_argument("--rm", dest="remove", action="store_true",
                   help="remove the container (overlay, state) when it exits")
    p.add_argument("-d", "--detach", action="store_true",
                   help="run in the background and print the container ID")
    p.add_argument("--restart", default="no", metavar="POLICY",
                   help="no (default), always, unless-stopped, or on-failure[:MAX-RETRIES]: "
                        "start it again when it ends, while this host runs")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="max-size (default 10m) and max-file (default 3) of the log kept "
                        "of its output")
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
    p.add_argument("--network", default="user", metavar="MODE",
                   help="user (default: QEMU's user-mode network, NAT to the host's) or none "
                        "(only loopback)")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="[IP:][HOST_PORT:]PORT[/PROTO]",
                   help="forward a host port (on 127.0.0.1 unless IP says otherwise; a free "
                        "one without HOST_PORT) to the container's PORT, tcp or udp")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every port the image exposes on a free port of 127.0.0.1")
    p.add_argument("--dns", action="append", default=[], metavar="IP",
                   help="a nameserver for /etc/resolv.conf (default: the user network's)")
    p.add_argument("--dns-search", action="append", default=[], metavar="DOMAIN",
                   help="a search domain for /etc/resolv.conf")
    p.add_argument("--add-host", action="append", default=[], metavar="NAME:IP",
                   help="an /etc/hosts entry; IP host-gateway is the address of this host")
    p.add_argument("-v", "--volume", action="append", default=[],
                   metavar="[HOST_DIR|NAME:]CONTAINER_DIR[:ro]",
                   help="share a host directory (absolute path, created if missing) or a "
                        "named volume (created on first use); CONTAINER_DIR alone: an "
                        "anonymous volume")
    p.add_argument("--mount", action="append", default=[],
                   metavar="type=bind|volume|tmpfs,source=SRC,target=DST[,readonly]",
                   help="a mount in docker's --mount syntax")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:size=SIZE,mode=OCTAL]",
                   help="an empty tmpfs at PATH, gone with the container's VM")
    p.add_argument("--privileged", action="store_true",
                   help="give the container every capability")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                   help="add a capability to docker's default set (or ALL)")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                   help="drop a capability from docker's default set (or ALL)")
    p.add_argument("--cpus", help="virtual CPUs (default: run.cpus in config.yaml, else 1)")
    p.add_argument("--memory", "-m",
                   help="guest RAM, the memory limit (default: run.memory in config.yaml, "
                        "else 512m)")
    p.add_argument("--pull", choices=[policy.value for policy in PullPolicy],
                   default=PullPolicy.MISSING.value,
                   help="pull the image: missing (default), always or never")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the pull output")
    p.add_argument("--accel", choices=[a.value for a in Accel],
                   help="kvm, tcg (software emulation) or auto (default: run.accel in "
                        "config.yaml, else auto)")
    p.add_argument("--kernel", type=Path, help="boot this guest kernel instead")
    p.add_argument("--connect", help="libvirt URI (default $HYPERRUN_CONNECT or qemu:///system)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    p.set_defaults(func=_run)


_HOSTNAME_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
HOSTNAME_MAX = 64  # Linux's HOST_NAME_MAX


def validate_hostname(value: str | None) -> str | None:
    """--hostname must be an RFC 1123 host name the guest kernel accepts."""
    if value is None:
        return None
    if len(value) > HOSTNAME_MAX or not _HOSTNAME_RE.fullmatch(value):
        raise UsageError(f"invalid --hostname {value[:80]!r}",
                         hint=f"letters, digits, '-' and '.' labels, at most {HOSTNAME_MAX} "
                              "characters, e.g. web-1.example")
    return value


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
        env=env_entries(args),
        workdir=args.workdir,
        user=args.user,
        hostname=validate_hostname(args.hostname),
        name=None if args.name is None else validate_name(args.name),
        tty=args.tty,
        interactive=args.interactive,
        remove=args.remove,
        detach=args.detach,
        restart=_restart(args.restart, args.remove),
        **parse_log_opts(args.log_opt),
        cpus=parse_cpus(args.cpus or defaults.cpus or "1"),
        memory_mib=parse_memory(args.memory or defaults.memory or "512m"),
        accel=Accel(args.accel or defaults.accel or Accel.AUTO.value),
        kernel=args.kernel,
        pull=PullPolicy(args.pull),
        quiet=args.quiet,
        capabilities=capabilities.resolve(privileged=args.privileged,
                                          add=tuple(args.cap_add), drop=tuple(args.cap_drop)),
        network=network.network_spec(args.network, args.publish, args.dns, args.dns_search,
                                     args.add_host, args.publish_all),
        mounts=mounts.parse_all(args.volume, args.mount, args.tmpfs),
    )


def _run(args: argparse.Namespace, store: Store) -> int:
    spec = to_spec(args)

    def pull(reference: str) -> Image:
        # Imported here: the HTTP and progress libraries cost a tenth of a second of
        # start-up that running a local image does not need.
        from hyperrun.cli.progress import PullProgress
        from hyperrun.registry.pull import pull as pull_image

        with PullProgress.for_stream(sys.stderr, spec.quiet) as progress:  # as docker run does
            return pull_image(store, reference, progress=progress).image

    return container.run(spec, store, hypervisor.uri_from_env(args.connect), pull=pull,
                         terminal=UserTerminal() if spec.tty else None)


def _restart(policy: str, remove: bool) -> str:
    name, _ = restart.parse_policy(policy)
    if name != "no" and remove:
        raise UsageError("--restart and --rm cannot go together",
                         hint="a container removed when it ends cannot be restarted")
    return policy.strip()


_SIZE_RE = re.compile(r"(\d{1,15})([kmg]?)b?", re.ASCII)
LOG_SIZE_MIN = 4 << 10  # one record of output must fit


def parse_log_opts(opts: list[str]) -> dict[str, int]:
    """--log-opt max-size=10m / max-file=3, as docker's json-file driver takes them."""
    out = {"log_max_size": 10 << 20, "log_max_files": 3}
    hint = "use --log-opt max-size=SIZE (e.g. 10m) or --log-opt max-file=COUNT"
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "max-size":
            found = _SIZE_RE.fullmatch(value.strip().lower())
            size = int(found[1]) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[
                found[2]] if found else 0
            if not LOG_SIZE_MIN <= size <= 1 << 40:
                raise UsageError(f"invalid --log-opt {opt!r}: max-size must be between 4k "
                                 "and 1t", hint=hint)
            out["log_max_size"] = size
        elif key == "max-file":
            if not value.isdigit() or not 1 <= int(value) <= 100:
                raise UsageError(f"invalid --log-opt {opt!r}: max-file must be a number "
                                 "from 1 to 100", hint=hint)
            out["log_max_files"] = int(value)
        else:
            raise UsageError(f"unknown log option {key!r}", hint=hint)
    return out


_MEMORY_RE = re.compile(r"(\d+(?:\.\d+)?)([bkmgt]?)(?:i?b)?", re.ASCII)
_MEMORY_HINT = "use a size such as 256m or 1g"


def parse_memory(text: str) -> int:
    """'256m', '1g', '1024k' or bytes -> MiB, as docker's --memory accepts them.

    A decimal number and a unit, nothing else: float() would also take nan, inf and
    1e400, which no arithmetic below survives.
    """
    units = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    found = _MEMORY_RE.fullmatch(text.strip().lower())
    if found is None or len(found[1]) > 20:
        raise UsageError(f"invalid --memory {text!r}", hint=_MEMORY_HINT)
    mib = int(float(found[1]) * units[found[2]]) >> 20
    host_mib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    if mib > host_mib:
        raise UsageError(f"--memory {text} is more than this host has ({host_mib} MiB)",
                         hint="give the VM less memory")
    if mib < 64:
        raise UsageError(f"--memory {text} is too small for a VM",
                         hint="the guest kernel and agent need at least 64m")
    return mib


def parse_cpus(text: str) -> int:
    """A whole number of virtual CPUs, 1 to 64 ("2" or "2.0"; never nan, inf or 1e400)."""
    found = re.fullmatch(r"\s*0*(\d{1,3})(?:\.0*)?\s*", text, re.ASCII)
    value = int(found[1]) if found else -1
    if not 1 <= value <= 64:
        raise UsageError(f"invalid --cpus {text!r}",
                         hint="give a whole number of virtual CPUs between 1 and 64")
    return value
