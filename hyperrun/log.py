"""User-facing messages on stderr, and the debug logger."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("hyperrun")


def setup(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hyperrun: debug: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.WARNING)


def warning(message: str) -> None:
    print(f"hyperrun: warning: {message}", file=sys.stderr, flush=True)


def error(message: str, hint: str | None = None, details: str | None = None) -> None:
    """One line: the message and, in brackets, what to do about it; details may follow."""
    line = f"hyperrun: {message}"
    if hint:
        line += f" (hint: {hint})"
    print(line, file=sys.stderr, flush=True)
    if details:
        print(details.rstrip("\n"), file=sys.stderr, flush=True)
