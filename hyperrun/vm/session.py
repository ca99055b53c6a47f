"""The host end of the agent protocol: boot handshake, starting a process, its stdio."""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hyperrun.errors import EXIT_HYPERRUN, ContainerError, GuestGone
from hyperrun.log import log
from hyperrun.spec import ProcessSpec, WinSize
from hyperrun.vm.protocol import (
    CTL_MAX,
    IO_MAX,
    FrameReader,
    Message,
    Msg,
    Stream,
    frame,
    stream_id,
)

# Stop reading our stdin while this much is still waiting to go to the guest.
STDIN_HIGH_WATER = 1 << 20


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
        self._io_reader = FrameReader(IO_MAX)
        self._pending: list[Message] = []

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
        try:
            self.ctl.sendall(message.encode())
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise GuestGone("the VM stopped unexpectedly") from exc

    def _read_ctl(self) -> list[Message]:
        try:
            data = self.ctl.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            raise GuestGone("the VM stopped unexpectedly")
        messages = [Message.decode(t, p) for t, p in self._ctl_reader.feed(data)]
        for m in messages:
            log.debug("<- %s %s", m.type.name, dict(m.fields))
        return messages

    def wait_for(self, accept: set[Msg], timeout: float, alive: Callable[[], bool]) -> Message:
        """Read control messages until one of `accept` arrives; others are kept for later."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self._pending):
                if m.type in accept:
                    return self._pending.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.ctl.settimeout(min(remaining, 0.25))
            try:
                self._pending.extend(self._read_ctl())
            except TimeoutError:
                if not alive():
                    raise GuestGone("the VM stopped before the guest agent answered") from None
            finally:
                self.ctl.settimeout(None)

    def setup_container(self, hostname: str, timeout: float, alive: Callable[[], bool]) -> None:
        self.send(Message.make(Msg.CONTAINER, ("hostname", hostname), ("rootfs", "vda"),
                               ("fstype", "ext4")))
        reply = self.wait_for({Msg.OK, Msg.ERROR}, timeout, alive)
        if reply.type is Msg.ERROR:
            raise ContainerError(f"preparing the container failed: {reply.get('message')}")

    def start(self, pid: int, spec: ProcessSpec, size: WinSize | None, main: bool,
              alive: Callable[[], bool]) -> None:
        """Send EXEC and wait until the agent says the program is running."""
        fields: list[tuple[str, str | int]] = [("id", pid)]
        fields += [("arg", a) for a in spec.args]
        fields += [("env", e) for e in spec.env]
        fields += [("cwd", spec.cwd), ("user", spec.user), ("tty", int(spec.tty)),
                   ("stdin", int(spec.stdin)), ("main", int(main))]
        if size is not None:
            fields += [("rows", size.rows), ("cols", size.cols)]
        try:
            self.send(Message.make(Msg.EXEC, *fields))
        except ValueError as exc:
            raise ContainerError(f"invalid process spec: {exc}") from exc
        reply = self.wait_for({Msg.STARTED, Msg.ERROR}, 60.0, alive)
        if reply.type is Msg.ERROR:
            status = reply.number("status", EXIT_HYPERRUN)
            raise ContainerError(reply.get("message") or "the process did not start", status)

    # -- streams -----------------------------------------------------------------------

    def pump(self, pid: int, *, tty: bool, stdin_fd: int | None,
             winsize: Callable[[], WinSize | None] | None = None,
             forward: tuple[signal.Signals, ...] = ()) -> int:
        """Move bytes between our stdio and process `pid` until it exits; return its status."""
        pump = _Pump(self, pid, tty=tty, stdin_fd=stdin_fd, winsize=winsize)
        with _signals_to_pipe((*forward, *((signal.SIGWINCH,) if winsize else ()))) as wake:
            return pump.run(wake)


@contextlib.contextmanager
def _signals_to_pipe(signals: tuple[signal.Signals, ...]) -> Iterator[socket.socket]:
    """Deliver signals as bytes on a socket so the select loop sees them."""
    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)
    wsock.setblocking(False)
    previous = {s: signal.signal(s, lambda *_: None) for s in signals}
    old_fd = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
    try:
        yield rsock
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        rsock.close()
        wsock.close()


class _Pump:
    def __init__(self, session: GuestSession, pid: int, *, tty: bool, stdin_fd: int | None,
                 winsize: Callable[[], WinSize | None] | None) -> None:
        self.s = session
        self.pid = pid
        self.stdin_fd = stdin_fd
        self.winsize = winsize
        self.out_fd = {stream_id(pid, Stream.STDOUT): 1, stream_id(pid, Stream.STDERR): 2}
        self.open_streams = {stream_id(pid, Stream.STDOUT)}
        if not tty:
            self.open_streams.add(stream_id(pid, Stream.STDERR))
        self.outbuf = bytearray()
        self.status: int | None = None

    def run(self, wake: socket.socket) -> int:
        # poll, not epoll: stdin may be a regular file, which epoll refuses.
        sel = selectors.PollSelector()
        self.s.io.setblocking(False)
        sel.register(self.s.ctl, selectors.EVENT_READ, "ctl")
        sel.register(self.s.io, selectors.EVENT_READ, "io")
        sel.register(wake, selectors.EVENT_READ, "wake")
        registered: int | None = None  # the stdin fd while the selector watches it
        for m in self.s._pending:
            self._on_ctl(m)
        self.s._pending.clear()
        try:
            while self.status is None or self.open_streams:
                # Back-pressure: a full outgoing buffer pauses reading our stdin.
                want = self.stdin_fd if len(self.outbuf) < STDIN_HIGH_WATER else None
                if want != registered:
                    if registered is not None:
                        sel.unregister(registered)
                    if want is not None:
                        sel.register(want, selectors.EVENT_READ, "stdin")
                    registered = want
                io_events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
                sel.modify(self.s.io, io_events, "io")
                for key, events in sel.select():
                    self._dispatch(key.data, events, wake)
        finally:
            sel.close()
            self.s.io.setblocking(True)
        return self.status

    def _dispatch(self, what: str, events: int, wake: socket.socket) -> None:
        if what == "ctl":
            for m in self.s._read_ctl():
                self._on_ctl(m)
        elif what == "io":
            if events & selectors.EVENT_WRITE:
                self._flush()
            if events & selectors.EVENT_READ:
                self._read_io()
        elif what == "stdin":
            self._read_stdin()
        elif what == "wake":
            self._on_signals(wake.recv(256))

    def _on_ctl(self, m: Message) -> None:
        if m.type is Msg.EXIT and m.number("id") == self.pid:
            self.status = m.number("status")

    def _read_io(self) -> None:
        try:
            data = self.s.io.recv(1 << 18)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            raise GuestGone("the VM stopped unexpectedly")
        for sid, payload in self.s._io_reader.feed(data):
            fd = self.out_fd.get(sid)
            if fd is None:
                continue
            if not payload:
                self.open_streams.discard(sid)
                continue
            _write_all(fd, payload)

    def _read_stdin(self) -> None:
        assert self.stdin_fd is not None
        try:
            data = os.read(self.stdin_fd, IO_MAX)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        self.outbuf += frame(stream_id(self.pid, Stream.STDIN), data)
        if not data:  # EOF: tell the guest once, then stop watching stdin
            self.stdin_fd = None
        self._flush()

    def _flush(self) -> None:
        try:
            sent = self.s.io.send(self.outbuf)
        except BlockingIOError:
            return
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise GuestGone("the VM stopped unexpectedly") from exc
        del self.outbuf[:sent]

    def _on_signals(self, raw: bytes) -> None:
        for signum in raw:
            if signum == signal.SIGWINCH and self.winsize is not None:
                size = self.winsize()
                if size is not None:
                    self.s.send(Message.make(Msg.WINSIZE, ("id", self.pid), ("rows", size.rows),
                                             ("cols", size.cols)))
            else:
                self.s.send(Message.make(Msg.SIGNAL, ("id", self.pid), ("signal", signum)))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BrokenPipeError:
            return  # our reader went away (e.g. `| head`); keep draining the guest
        view = view[n:]
