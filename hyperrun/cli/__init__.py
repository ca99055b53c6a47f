"""Command line: parse into typed specs, dispatch on the verb, turn errors into statuses."""

from __future__ import annotations

import argparse
import sys

from hyperrun import __version__, log
from hyperrun.cli import containers as cli_containers
from hyperrun.cli import copy as cli_copy
from hyperrun.cli import image_verbs as cli_image_verbs
from hyperrun.cli import images as cli_images
from hyperrun.cli import inspect as cli_inspect
from hyperrun.cli import lifecycle as cli_lifecycle
from hyperrun.cli import prune as cli_prune
from hyperrun.cli import registry as cli_registry
from hyperrun.cli import run as cli_run
from hyperrun.cli import running as cli_running
from hyperrun.cli import stats as cli_stats
from hyperrun.cli import system as cli_system
from hyperrun.errors import EXIT_HYPERRUN, EXIT_USAGE, HyperrunError
from hyperrun.store import Store


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line with a hint, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        log.error(message, hint=f"see `{self.prog} --help`")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hyperrun", description="Run OCI images in lightweight VMs.")
    parser.add_argument("--version", action="version", version=f"hyperrun {__version__}")
    parser.add_argument("--debug", action="store_true", help="log every step; show tracebacks")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    verbs.required = True
    for module in (cli_run, cli_lifecycle, cli_containers, cli_running, cli_stats, cli_copy,
                   cli_inspect, cli_images, cli_image_verbs, cli_prune, cli_registry, cli_system):
        module.register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
