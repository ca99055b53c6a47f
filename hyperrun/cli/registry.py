"""The registry verbs: pull, login, logout."""

from __future__ import annotations

import argparse
import getpass
import sys

from hyperrun import config as config_mod
from hyperrun import reference as references
from hyperrun.errors import UsageError
from hyperrun.log import escape
from hyperrun.registry import credentials
from hyperrun.registry.credentials import Credentials
from hyperrun.registry.manifests import Platform
from hyperrun.store import Store


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the registry verbs to the top-level parser."""
    p = subparsers.add_parser("pull", help="pull an image from a registry")
    p.add_argument("ref", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="the platform to pull from a multi-platform image (default: this host)")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the progress output")
    p.set_defaults(func=pull)

    p = subparsers.add_parser("login", help="log in to a registry")
    p.add_argument("server", metavar="SERVER", nargs="?", default=references.DEFAULT_DOMAIN,
                   help="registry host[:port] (default docker.io)")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="the password (prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input")
    p.set_defaults(func=login)

    p = subparsers.add_parser("logout", help="log out from a registry")
    p.add_argument("server", metavar="SERVER", nargs="?", default=references.DEFAULT_DOMAIN)
    p.set_defaults(func=logout)


# The handlers import the HTTP and progress libraries themselves: every other verb
# would otherwise pay a tenth of a second of start-up for them.


def pull(args: argparse.Namespace, store: Store) -> int:
    from hyperrun.cli.progress import PullProgress
    from hyperrun.registry.pull import pull as pull_image

    platform = Platform.parse(args.platform) if args.platform else None
    with PullProgress.for_stream(sys.stdout, args.quiet) as progress:
        result = pull_image(store, args.ref, progress=progress, platform=platform)
    print(result.reference)  # like docker: the full reference, even with -q
    return 0


def login(args: argparse.Namespace, store: Store) -> int:
    from hyperrun.registry.client import Registry

    host = credentials.registry_host(args.server)
    username = args.username
    if args.password_stdin:
        if args.password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        if not username:
            raise UsageError("must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = args.password
    if not username:
        if not sys.stdin.isatty():
            raise UsageError("no username given and no terminal to ask for one",
                             hint="pass --username and --password-stdin")
        username = input("Username: ").strip()
    if not password:
        if not sys.stdin.isatty():
            raise UsageError("no password given and no terminal to ask for one",
                             hint="pipe it into --password-stdin")
        password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("username and password are both required")
    creds = Credentials(username, password)
    with Registry(host, config_mod.load(), creds) as registry:
        registry.login()
    path = credentials.save(host, creds)
    print(f"Login Succeeded (credentials saved in {path})")
    return 0


def logout(args: argparse.Namespace, store: Store) -> int:
    host = credentials.registry_host(args.server)
    if credentials.remove(host):
        print(f"Removing login credentials for {escape(host)}")
    else:
        print(f"Not logged in to {escape(host)}")
    return 0
