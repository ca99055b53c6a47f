"""The host end of the agent protocol: connecting, the boot handshake, starting a process.

The guest is not trusted (docs/protocol.md "The host trusts no frame"): numbers are
parsed strictly, everything kept from the guest is bounded, and a guest that breaks the
rules gets a ProtocolError, which ends the run with status 125 and a destroyed VM.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hyperrun import capabilities
from hyperrun.errors import ContainerError, GuestGone, ProtocolError
from hyperrun.log import log
from hyperrun.spec import ProcessSpec, WinSize
from hyperrun.vm.protocol import (
    CTL_MAX,
    FROM_GUEST,
    IO_MAX,
    FrameReader,
    Message,
    Msg,
    error_status,
)
from hyperrun.vm.pump import Pump, signals_to_pipe

# Control messages dropped as unexpected (unknown types, replies nobody asked for, ids
# never started) before the guest counts as hostile. The agent sends none; the slack is
# for a newer agent's additions.
UNEXPECTED_MAX = 64
# How long sending one control message may block on a guest that does not read.
SEND_TIMEOUT = 30.0
# How long the agent has to answer EXEC with STARTED or ERROR.
START_TIMEOUT = 60.0


def _connect_unix(path: Path, deadline: float) -> socket.socket:
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(path))
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED) or time.monotonic() > deadline:
                raise GuestGone(f"cannot connect to the guest channel {path}: "
                                f"{exc.strerror}") from exc
            time.sleep(0.01)


class GuestSession:
    """Both channels of one VM, connected. Not thread-safe; one pump at a time."""

    def __init__(self, ctl: socket.socket, io: socket.socket) -> None:
        self.ctl = ctl
        self.io = io
        self._ctl_reader = FrameReader(CTL_MAX)
        self.io_reader = FrameReader(IO_MAX)
        # Messages decoded but not yet looked at: at most one read's worth.
        self._inbox: deque[Message] = deque()
        # EXITs of started processes that came while we waited for something else; at
        # most one per started process, so bounded by the processes we started.
        self._pending: list[Message] = []
        self._started: set[int] = set()
        self._unexpected = 0
        # Whether the VM is paused (`hyperrun pause`); wait_for's clock stops meanwhile.
        self.paused: Callable[[], bool] = lambda: False

    @classmethod
    @contextlib.contextmanager
    def connect(cls, ctl_path: Path, io_path: Path,
                timeout: float = 10.0) -> Iterator[GuestSession]:
        deadline = time.monotonic() + timeout
        ctl = _connect_unix(ctl_path, deadline)
        try:
            io = _connect_unix(io_path, deadline)
        except BaseException:
            ctl.close()
            raise
        try:
            yield cls(ctl, io)
        finally:
            ctl.close()
            io.close()

    # -- control channel ---------------------------------------------------------------

    def send(self, message: Message) -> None:
        log.debug("-> %s %s", message.type.name, dict(message.fields))
        # A guest that stops reading must not block us forever once its buffer is full.
        self.ctl.settimeout(SEND_TIMEOUT)
        try:
            self.ctl.sendall(message.encode())
        except TimeoutError as exc:
            raise GuestGone("the guest agent stopped reading its control channel") from exc
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise GuestGone("the VM stopped unexpectedly") from exc
        finally:
            self.ctl.settimeout(None)

    def read_control(self) -> list[Message]:
        """One read of the control channel; the guest messages it completed."""
        try:
            data = self.ctl.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            raise GuestGone("the VM stopped unexpectedly")
        messages = []
        for kind, payload in self._ctl_reader.feed(data):
            if kind not in FROM_GUEST:
                self.unexpected(f"message of type {kind}")
                continue
            m = Message.decode(kind, payload)
            log.debug("<- %s %s", m.type.name, dict(m.fields))
            messages.append(m)
        return messages

    def unexpected(self, what: str) -> None:
        """Drop a message nobody asked for; too many of them and the guest is hostile."""
        self._unexpected += 1
        log.debug("dropped an unexpected %s from the guest", what)
        if self._unexpected > UNEXPECTED_MAX:
            raise ProtocolError(f"more than {UNEXPECTED_MAX} unexpected control messages "
                                f"(the last: {what})")

    def take_buffered(self) -> list[Message]:
        """The messages read but not consumed by wait_for, for the pump to judge."""
        out = [*self._pending, *self._inbox]
        self._pending.clear()
        self._inbox.clear()
        return out

    def _set_aside(self, m: Message) -> None:
        # Only an EXIT of a process we started can matter later (to the pump).
        if m.type is Msg.EXIT:
            pid = m.number("id")
            if pid in self._started and not any(p.number("id") == pid for p in self._pending):
                self._pending.append(m)
                return
        self.unexpected(_describe(m))

    def wait_for(self, accept: Callable[[Message], bool], timeout: float,
                 alive: Callable[[], bool]) -> Message:
        """Read control messages until `accept` takes one; TimeoutError after timeout.

        What arrives meanwhile is set aside if it may matter later, otherwise dropped
        and counted, so a flood costs neither memory nor time beyond UNEXPECTED_MAX.
        """
        deadline = time.monotonic() + timeout
        while True:
            while self._inbox:
                m = self._inbox.popleft()
                if accept(m):
                    return m
                self._set_aside(m)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            tick = min(remaining, 0.25)
            self.ctl.settimeout(tick)
            try:
                self._inbox.extend(self.read_control())
            except TimeoutError:
                if not alive():
                    raise GuestGone("the VM stopped before the guest agent answered") from None
                if self.paused():  # a frozen guest cannot answer: its pause is not its delay
                    deadline += tick
            finally:
                self.ctl.settimeout(None)

    def setup_container(self, hostname: str, timeout: float, alive: Callable[[], bool],
                        extra: Sequence[tuple[str, str | int]] = ()) -> Message:
        """Send CONTAINER, with extra keys (the network's) after the root disk's; return the
        agent's OK (its boot stamps are for benchmarks)."""
        self.send(Message.make(Msg.CONTAINER, ("hostname", hostname), ("rootfs", "vda"),
                               ("fstype", "ext4"), *extra))
        reply = self.wait_for(lambda m: m.type in (Msg.OK, Msg.ERROR), timeout, alive)
        if reply.type is Msg.ERROR:
            # The text is the guest's: kept short by Message.decode, escaped by log.error.
            raise ContainerError(f"preparing the container failed: {reply.get('message')}")
        return reply

    def start(self, pid: int, spec: ProcessSpec, size: WinSize | None, main: bool,
              alive: Callable[[], bool]) -> Message:
        """Send EXEC and wait until the agent says the program is running; its STARTED."""
        fields: list[tuple[str, str | int]] = [("id", pid)]
        fields += [("arg", a) for a in spec.args]
        fields += [("env", e) for e in spec.env]
        fields += [("cwd", spec.cwd), ("user", spec.user), ("tty", int(spec.tty)),
                   ("stdin", int(spec.stdin)), ("main", int(main)),
                   ("caps", capabilities.wire(spec.capabilities))]
        if size is not None:
            fields += [("rows", size.rows), ("cols", size.cols)]
        if spec.tool:
            fields.append(("tool", spec.tool))
        try:
            self.send(Message.make(Msg.EXEC, *fields))
        except ValueError as exc:
            raise ContainerError(f"invalid process spec: {exc}") from exc

        def answers(m: Message) -> bool:
            # The agent sends an ERROR without id when EXEC's own id was unusable.
            if m.type is Msg.ERROR:
                return m.get("id") is None or m.number("id") == pid
            return m.type is Msg.STARTED and m.number("id") == pid

        try:
            reply = self.wait_for(answers, START_TIMEOUT, alive)
        except TimeoutError:
            raise GuestGone(f"the guest agent did not answer EXEC within "
                            f"{START_TIMEOUT:.0f}s") from None
        if reply.type is Msg.ERROR:
            status = error_status(reply)
            raise ContainerError(reply.get("message") or "the process did not start", status)
        self._started.add(pid)
        return reply

    def attach(self, pid: int) -> None:
        """Ask the monitor for process pid's output and exit from now on (`attach`)."""
        self.send(Message.make(Msg.ATTACH, ("id", pid)))
        try:
            reply = self.wait_for(lambda m: m.type in (Msg.OK, Msg.ERROR), START_TIMEOUT,
                                  lambda: True)
        except TimeoutError:
            raise GuestGone("the container's monitor did not answer") from None
        if reply.type is Msg.ERROR:
            raise ContainerError("the container's main process has already ended", 1)
        self._started.add(pid)

    def send_signal(self, pid: int, signum: int) -> None:
        self.send(Message.make(Msg.SIGNAL, ("id", pid), ("signal", signum)))

    # -- streams -----------------------------------------------------------------------

    def pump(self, pid: int, *, tty: bool, stdin_fd: int | None,
             winsize: Callable[[], WinSize | None] | None = None,
             forward: tuple[signal.Signals, ...] = ()) -> int:
        """Move bytes between our stdio and process `pid` until it exits; return its status."""
        pump = Pump(self, pid, tty=tty, stdin_fd=stdin_fd, winsize=winsize)
        with signals_to_pipe((*forward, *((signal.SIGWINCH,) if winsize else ()))) as wake:
            return pump.run(wake)


def _describe(m: Message) -> str:
    """A message named for the debug log and errors, without the guest's free text."""
    pid = m.get("id")
    return m.type.name if pid is None else f"{m.type.name} for id {m.number('id')}"
