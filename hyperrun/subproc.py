"""The one place hyperrun starts external programs.

hyperrun runs as root, often from a directory or with an environment some other user
controls. Nothing of the caller's may choose what runs: programs are looked up on a fixed
PATH of system directories, get a minimal environment (no PATH, LD_*, MKE2FS_CONFIG, ...
of the caller's) and, when detached, start in "/" rather than the caller's directory.
"""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import hyperrun
from hyperrun.errors import CommandFailed, HyperrunError

log = logging.getLogger("hyperrun")

# Only root can write these on Debian; the caller's PATH is never consulted.
TRUSTED_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def environment() -> dict[str, str]:
    """The whole environment a child gets: a fixed PATH and the C locale (stable messages)."""
    return {"PATH": TRUSTED_PATH, "LC_ALL": "C"}


def resolve(program: str) -> str:
    """The absolute path of program on TRUSTED_PATH (an absolute name is kept as it is)."""
    if os.path.isabs(program):
        return program
    found = shutil.which(program, path=TRUSTED_PATH) if "/" not in program else None
    if found is None:
        raise HyperrunError(f"{program}: command not found in {TRUSTED_PATH}",
                            hint="run scripts/setup")
    return found


def isolated_python(module: str) -> list[str]:
    """argv that runs `module.main(argv[1:])` in an isolated interpreter (`python -I`).

    The child imports hyperrun from the directory this process's own hyperrun came from,
    never from its working directory, PYTHONPATH or user site-packages: as root, a
    `hyperrun/` planted in the caller's directory must not run. Append its arguments.
    """
    package_parent = Path(hyperrun.__file__).resolve().parent.parent
    bootstrap = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                 f"from {module} import main; sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-I", "-c", bootstrap, str(package_parent)]


def run(argv: Sequence[str], *, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run argv to completion; raise CommandFailed with its stderr if it fails."""
    argv = [str(a) for a in argv]
    argv[0] = resolve(argv[0])
    log.debug("+ %s", shlex.join(argv))
    try:
        # umask 077: what a tool creates (qemu-img's overlay) starts out root's alone.
        proc = subprocess.run(argv, input=input, capture_output=True, check=False,
                              env=environment(), umask=0o077)
    except FileNotFoundError as exc:
        raise HyperrunError(f"{argv[0]}: command not found", hint="run scripts/setup") from exc
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc


def spawn_detached(argv: Sequence[str]) -> None:
    """Start argv in its own session in "/", not waited for, with no stdio or fds of ours.

    close_fds matters beyond tidiness: a child holding a copy of our libvirt connection
    would keep AUTODESTROY domains alive after we exit.
    """
    argv = [str(a) for a in argv]
    argv[0] = resolve(argv[0])
    log.debug("+ %s &", shlex.join(argv))
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                     cwd="/", env=environment())


def start_daemon(argv: Sequence[str], stderr: Path, timeout: float) -> str:
    """Start a program that daemonizes itself; the first line it writes on its stdout.

    The program forks, its first half exits, and the daemon says it is ready on the pipe
    it inherited as stdout. Its stderr is appended to the file `stderr` (0600). An empty
    string means it said nothing within timeout (or died first).
    """
    argv = [str(a) for a in argv]
    argv[0] = resolve(argv[0])
    log.debug("+ %s &", shlex.join(argv))
    fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=fd, close_fds=True, cwd="/", env=environment(),
                                start_new_session=True)
    finally:
        os.close(fd)
    assert proc.stdout is not None
    line = b""
    with proc.stdout, selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n") and len(line) < 256:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                break
            line += chunk
    proc.wait()  # the first half exits at once; the daemon runs on
    return line.decode(errors="replace").strip() if line.endswith(b"\n") else ""
