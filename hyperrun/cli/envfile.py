"""-e/--env and --env-file, as `run` and `exec` take them."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

from hyperrun.errors import UsageError

ENV_FILE_MAX = 1 << 20  # the whole EXEC message must fit in 1 MiB anyway
_ENV_FILE_HINT = "give a readable regular file of KEY=VALUE lines"


def read_env_file(path: Path) -> list[str]:
    """The KEY=VALUE lines of an --env-file: a regular file of at most ENV_FILE_MAX bytes.

    Anything else (/dev/zero, a FIFO nobody writes to, a huge file) is refused rather
    than read without bound or waited for.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read --env-file {path}: {exc.strerror}",
                         hint=_ENV_FILE_HINT) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"--env-file {path} is not a regular file", hint=_ENV_FILE_HINT)
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(ENV_FILE_MAX + 1)
        except OSError as exc:
            raise UsageError(f"cannot read --env-file {path}: {exc.strerror}",
                             hint=_ENV_FILE_HINT) from None
    if len(data) > ENV_FILE_MAX:
        raise UsageError(f"--env-file {path} is larger than {ENV_FILE_MAX >> 20} MiB",
                         hint="the environment of a container must fit in 1 MiB")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise UsageError(f"--env-file {path} is not UTF-8 text", hint=_ENV_FILE_HINT) from None
    return [line for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def env_entries(args: argparse.Namespace) -> tuple[str, ...]:
    entries: list[str] = []
    for path in args.env_file:
        entries += read_env_file(path)
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
