"""Command line: parse into typed specs, dispatch on the verb, turn errors into statuses."""

from __future__ import annotations

import argparse
import importlib
import sys

from hyperrun import __version__, log
from hyperrun.errors import EXIT_HYPERRUN, EXIT_USAGE, HyperrunError
from hyperrun.store import Store

# The module that registers each verb, in the order `--help` lists them. Only the one a
# command names is imported: the others' libraries (libvirt, the image store, HTTP)
# would cost a tenth of a second of start-up, which matters most to `exec`.
VERBS = {
    "run": "run",
    "exec": "lifecycle", "attach": "lifecycle", "logs": "lifecycle", "stop": "lifecycle",
    "restart": "lifecycle", "kill": "lifecycle", "start": "lifecycle",
    "ps": "containers", "rm": "containers", "rename": "containers",
    "port": "containers",
    "pause": "running", "unpause": "running", "wait": "running",
    "stats": "stats",
    "cp": "copy", "top": "copy",
    "inspect": "inspect",
    "load": "images", "import": "images", "images": "images", "rmi": "images",
    "tag": "image_verbs", "save": "image_verbs", "history": "image_verbs",
    "image": "image_verbs",
    "system": "prune",
    "pull": "registry", "login": "registry", "logout": "registry",
    "info": "system", "version": "system",
    "bench": "bench", "compare": "compare",
    "pool": "pool", "volume": "volume",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line with a hint, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        log.error(message, hint=f"see `{self.prog} --help`")
        sys.exit(EXIT_USAGE)


def _requested_verb(argv: list[str]) -> str | None:
    """The verb a command line names, if it is the first word after hyperrun's options."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in VERBS else None
        if arg in ("-h", "--help", "--version"):
            return None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with argv, only the verb argv names is registered (see VERBS)."""
    parser = _Parser(prog="hyperrun", description="Run OCI images in lightweight VMs.")
    parser.add_argument("--version", action="version", version=f"hyperrun {__version__}")
    parser.add_argument("--debug", action="store_true", help="log every step; show tracebacks")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    verbs.required = True
    wanted = _requested_verb(argv) if argv is not None else None
    modules = [VERBS[wanted]] if wanted else list(dict.fromkeys(VERBS.values()))
    for name in modules:
        importlib.import_module(f"hyperrun.cli.{name}").register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:  # without building every verb's parser
        print(f"hyperrun {__version__}")
        return 0
    args = build_parser(argv).parse_args(argv)
    log.setup(args.debug)
    try:
        return args.func(args, Store.default())
    except HyperrunError as exc:
        if args.debug:
            log.log.exception("failed")
        log.error(exc.message, exc.hint, exc.details)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort; --debug shows where it came from
        if args.debug:
            raise
        log.error(f"internal error: {exc.__class__.__name__}: {exc}",
                  hint="rerun with --debug and report the traceback")
        return EXIT_HYPERRUN


if __name__ == "__main__":
    sys.exit(main())
