"""The one place hyperrun starts external programs."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Sequence

from hyperrun.errors import CommandFailed, HyperrunError

log = logging.getLogger("hyperrun")


def run(argv: Sequence[str], *, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run argv to completion; raise CommandFailed with its stderr if it fails."""
    argv = [str(a) for a in argv]
    log.debug("+ %s", shlex.join(argv))
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise HyperrunError(f"{argv[0]}: command not found", hint="run scripts/setup") from exc
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc


def spawn_detached(argv: Sequence[str]) -> None:
    """Start argv in its own session, not waited for, with no stdio of ours."""
    argv = [str(a) for a in argv]
    log.debug("+ %s &", shlex.join(argv))
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
