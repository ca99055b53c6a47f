"""`exec` and `attach`: more clients of a running container's monitor.

An exec is a remote procedure call, not a boot: one EXEC message (main=0) through the
monitor, and the agent starts the process in the container's namespaces with its
capabilities. Each command gets its own channels from the monitor, so any number of
them, from any number of terminals, run side by side with the container's `run`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from dataclasses import replace

from hyperrun.containers import records
from hyperrun.containers.process import FORWARDED_SIGNALS, Terminal, main_process, merge_env
from hyperrun.containers.records import Container
from hyperrun.errors import GuestGone, HyperrunError, UsageError
from hyperrun.spec import ProcessSpec
from hyperrun.store import Store
from hyperrun.vm import monitor
from hyperrun.vm.session import GuestSession

# Process ids of execs: random, so two commands rarely pick the same one (the monitor
# refuses a taken id, and we pick again); below 2**30 so id*4+kind fits a u32.
ID_RANGE = 1 << 30
ID_TRIES = 8


class ContainerNotRunning(HyperrunError):
    status = 125

    def __init__(self, c: Container, paused: bool) -> None:
        word = "paused" if paused else "not running"
        hint = (f"`hyperrun unpause {c.name}` first" if paused
                else f"`hyperrun start {c.name}` starts it again")
        super().__init__(f"container {c.name} is {word}", hint=hint)


def running(store: Store, ref: str, uri: str) -> Container:
    """ref, if its main process runs and its monitor can be reached.

    A live monitor means a live VM (it ends with it), so the common case needs neither
    libvirt nor its 20 ms of import: an exec is a remote procedure call, not a boot.
    Only when the answer is no is libvirt asked why, to say it the way `ps` would.
    """
    c = records.find(store, ref)
    files = records.paths(store, c.id)
    if c.exit_status is None and not c.paused and monitor.alive(c.monitor_pid,
                                                                 files.mon_socket):
        return c
    from hyperrun.containers import lifecycle  # the slow path: why it is not running
    from hyperrun.containers.lifecycle import State
    from hyperrun.vm import hypervisor

    conn = hypervisor.connect(uri)
    try:
        c, state = lifecycle.refresh(conn, store, c)
    finally:
        conn.close()
    if state is State.UP and monitor.alive(c.monitor_pid, files.mon_socket):
        return c
    raise ContainerNotRunning(c, state is State.PAUSED)


def exec_spec(c: Container, args: tuple[str, ...], env: tuple[str, ...], workdir: str | None,
              user: str | None, tty: bool, interactive: bool) -> ProcessSpec:
    """A new process in c: the container's environment, user and capabilities, as docker."""
    main = main_process(c.settings)
    if not args:
        raise UsageError("no command given", hint="hyperrun exec CONTAINER COMMAND [ARG...]")
    if workdir is not None and not workdir.startswith("/"):
        raise UsageError(f"the working directory {workdir!r} is not absolute",
                         hint="give -w an absolute path")
    implicit = ("TERM=xterm",) if tty else ()
    return replace(main, args=args, env=merge_env((*implicit, *main.env), env),
                   cwd=workdir or main.cwd, user=main.user if user is None else user,
                   tty=tty, stdin=interactive)


def start_process(guest: GuestSession, spec: ProcessSpec, terminal: Terminal | None,
                  alive: Callable[[], bool]) -> int:
    """Start spec under a fresh process id (another command may hold one); that id."""
    size = terminal.size() if terminal is not None else None
    for _ in range(ID_TRIES):
        pid = 2 + secrets.randbelow(ID_RANGE - 2)
        try:
            guest.start(pid, spec, size, main=False, alive=alive)
            return pid
        except HyperrunError as exc:
            if "is in use" not in exc.message:
                raise
    raise HyperrunError("no free process id in the container", hint="try again")


def exec_in(store: Store, ref: str, spec: ProcessSpec, *, uri: str, detach: bool,
            terminal: Terminal | None) -> int:
    """Run spec in the running container ref; its exit status (0 at once with detach)."""
    c = running(store, ref, uri)
    files = records.paths(store, c.id)

    def alive() -> bool:
        return monitor.alive(c.monitor_pid, files.mon_socket)

    term = terminal if spec.tty and not detach else None
    with monitor.session(files.mon_socket) as guest:
        if detach:
            start_process(guest, spec, None, alive)
            return 0
        with term.raw() if term is not None else contextlib.nullcontext():
            pid = start_process(guest, spec, term, alive)
            try:
                return guest.pump(pid, tty=spec.tty, stdin_fd=0 if spec.stdin else None,
                                  winsize=term.size if term is not None and term.follows_resizes
                                  else None, forward=FORWARDED_SIGNALS)
            except GuestGone:
                raise GuestGone(f"container {c.name} stopped while the command ran") from None


def attach(store: Store, ref: str, uri: str, terminal: Terminal | None, stdin: bool) -> int:
    """Follow the main process's output (and feed its stdin); its exit status."""
    c = running(store, ref, uri)
    s = c.settings
    term = terminal if s.tty else None
    with monitor.session(records.paths(store, c.id).mon_socket) as guest:
        guest.attach(1)
        with term.raw() if term is not None else contextlib.nullcontext():
            try:
                return guest.pump(1, tty=s.tty, stdin_fd=0 if stdin and s.open_stdin else None,
                                  winsize=term.size if term is not None and term.follows_resizes
                                  else None, forward=FORWARDED_SIGNALS)
            except GuestGone:
                ended = records.read_exit(records.paths(store, c.id))
                if ended is not None:
                    return ended[0]
                raise
