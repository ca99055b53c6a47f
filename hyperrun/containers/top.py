"""`top`, and running the agent's own tools in a running container (for `top` and `cp`).

Images need not contain `ps` or `tar`; the initrd carries a static busybox that the agent
execs in the container's namespaces and root when EXEC says `tool=busybox`
(docs/protocol.md "The agent's tools"). Its output comes from inside the container, so it
is as untrusted as the guest: what we keep of it is bounded.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import replace

from hyperrun.containers import exec as exec_mod
from hyperrun.containers import records
from hyperrun.containers.process import main_process
from hyperrun.containers.records import Container
from hyperrun.errors import ContainerError, GuestGone
from hyperrun.spec import ProcessSpec
from hyperrun.store import Store
from hyperrun.vm import monitor
from hyperrun.vm.protocol import Stream, stream_id
from hyperrun.vm.pump import Pump, signals_to_pipe
from hyperrun.vm.session import GuestSession

TOOL = "busybox"
# busybox ps knows no TIME or STIME column; these are what it has that `docker top` shows.
DEFAULT_PS_ARGS = ("-o", "user,pid,ppid,stat,tty,args")
HEADERS = {"USER": "UID", "COMMAND": "CMD", "TT": "TTY"}  # docker's `ps -ef` names
OUTPUT_MAX = 4 << 20  # ps output kept; a container cannot have more processes than that
STDERR_MAX = 4096  # what a tool's error message may take
# A tool runs as root, not as the container's user (it must read and write every file).
ROOT = "0:0"


def tool_spec(c: Container, args: tuple[str, ...]) -> ProcessSpec:
    """The agent's busybox applet args[0], as root with the container's capabilities."""
    main = main_process(c.settings)
    return ProcessSpec(args=args, env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                       "/usr/bin:/sbin:/bin",),
                       cwd="/", user=ROOT, capabilities=main.capabilities, tool=TOOL)


class Collector(threading.Thread):
    """Reads a pipe to its end, keeping at most `limit` bytes (the rest is counted)."""

    def __init__(self, fd: int, limit: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.limit = fd, limit
        self.data = bytearray()
        self.dropped = 0

    def run(self) -> None:
        try:
            while chunk := os.read(self.fd, 1 << 16):
                room = self.limit - len(self.data)
                self.data += chunk[:room]
                self.dropped += max(0, len(chunk) - room)
        finally:
            os.close(self.fd)


class _ToolPump(Pump):
    """A pump whose stdout and stderr go to descriptors of ours, not the user's."""

    def __init__(self, session: GuestSession, pid: int, stdin_fd: int | None, out_fd: int,
                 err_fd: int, stop: threading.Event | None) -> None:
        super().__init__(session, pid, tty=False, stdin_fd=stdin_fd, winsize=None)
        self.out_fd = {stream_id(pid, Stream.STDOUT): out_fd,
                       stream_id(pid, Stream.STDERR): err_fd}
        self.stop, self.killed = stop, False

    def _read_io(self) -> None:
        super()._read_io()
        # Our reader gave up (a hostile or oversized stream): output that nobody takes
        # must not keep flowing for as long as the guest likes.
        if self.stop is not None and self.stop.is_set() and not self.killed:
            self.killed = True
            self.s.send_signal(self.pid, signal.SIGKILL)


def run_tool(uri: str, store: Store, ref: str, args: tuple[str, ...], *,
             stdin_fd: int | None, out_fd: int,
             stop: threading.Event | None = None) -> tuple[Container, int, str]:
    """Run a busybox applet in the running container ref; (container, status, stderr).

    Its stdout goes to out_fd (our stdin_fd, if any, is its stdin); stderr is kept short.
    Once stop is set, the applet is killed.
    """
    c = exec_mod.running(store, ref, uri)
    mon_socket = records.paths(store, c.id).mon_socket

    def alive() -> bool:
        return monitor.alive(c.monitor_pid, mon_socket)

    spec = tool_spec(c, args)
    if stdin_fd is not None:
        spec = replace(spec, stdin=True)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    errors = Collector(err_r, STDERR_MAX)
    errors.start()
    try:
        with monitor.session(records.paths(store, c.id).mon_socket) as guest:
            pid = exec_mod.start_process(guest, spec, None, alive)
            with signals_to_pipe(()) as wake:
                try:
                    status = _ToolPump(guest, pid, stdin_fd, out_fd, err_w, stop).run(wake)
                except GuestGone:
                    raise GuestGone(f"container {c.name} stopped while the command ran") \
                        from None
    finally:
        os.close(err_w)
        errors.join()
    return c, status, errors.data.decode(errors="replace").strip()


def top(uri: str, store: Store, ref: str,
        ps_args: tuple[str, ...] = ()) -> list[list[str]]:
    """The container's processes as rows (the first one the headers), from busybox ps."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    output = Collector(out_r, OUTPUT_MAX)
    output.start()
    try:
        c, status, err = run_tool(uri, store, ref, ("ps", *(ps_args or DEFAULT_PS_ARGS)),
                                  stdin_fd=None, out_fd=out_w)
    finally:
        os.close(out_w)
        output.join()
    if status != 0:
        raise ContainerError(f"ps failed in container {c.name}: {last_line(err, status)}",
                             status=1)
    return parse_ps(output.data.decode(errors="replace"))


def parse_ps(text: str) -> list[list[str]]:
    """busybox ps output as rows; the last column (the command) keeps its spaces."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = [HEADERS.get(h, h) for h in lines[0].split()]
    rows = [header]
    for line in lines[1:]:
        cells = line.split(None, len(header) - 1)
        rows.append(cells + [""] * (len(header) - len(cells)))
    return rows


def last_line(err: str, status: int) -> str:
    lines = err.splitlines()
    return lines[-1][:500] if lines else f"exit status {status}"

