"""The stdio loop of one process: our stdin to the guest, its output to our stdout/stderr.

The process's output is the user's data and passes through byte for byte; only the
framing around it is checked (docs/protocol.md "The host trusts no frame").
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from hyperrun.errors import GuestGone, ProtocolError
from hyperrun.spec import WinSize
from hyperrun.vm.protocol import IO_MAX, Message, Msg, Stream, exit_status, frame, stream_id

if TYPE_CHECKING:
    from hyperrun.vm.session import GuestSession

# Stop reading our stdin while this much is still waiting to go to the guest.
STDIN_HIGH_WATER = 1 << 20
# After EXIT the agent has already sent every EOF (docs/protocol.md "Order of a run"), so
# they are only in flight; this long with no output from the guest means they never come.
EOF_GRACE = 10.0


@contextlib.contextmanager
def signals_to_pipe(signals: tuple[signal.Signals, ...]) -> Iterator[socket.socket]:
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


class Pump:
    def __init__(self, session: GuestSession, pid: int, *, tty: bool, stdin_fd: int | None,
                 winsize: Callable[[], WinSize | None] | None) -> None:
        self.s = session
        self.pid = pid
        self.stdin_fd = stdin_fd
        self.winsize = winsize
        # The streams still open and where they go; with a TTY there is no stderr stream.
        self.out_fd = {stream_id(pid, Stream.STDOUT): 1}
        if not tty:
            self.out_fd[stream_id(pid, Stream.STDERR)] = 2
        self.outbuf = bytearray()
        self.status: int | None = None
        self.eof_deadline = 0.0

    def run(self, wake: socket.socket) -> int:
        # poll, not epoll: stdin may be a regular file, which epoll refuses.
        sel = selectors.PollSelector()
        self.s.io.setblocking(False)
        sel.register(self.s.ctl, selectors.EVENT_READ, "ctl")
        sel.register(self.s.io, selectors.EVENT_READ, "io")
        sel.register(wake, selectors.EVENT_READ, "wake")
        registered: int | None = None  # the stdin fd while the selector watches it
        try:
            for m in self.s.take_buffered():
                self._on_ctl(m)
            while self.status is None or self.out_fd:
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
                for key, events in sel.select(self._timeout()):
                    self._dispatch(key.data, events, wake)
        finally:
            sel.close()
            self.s.io.setblocking(True)
        return self.status

    def _timeout(self) -> float | None:
        """None while the process runs; after EXIT, what is left of the EOF grace."""
        if self.status is None:
            return None
        left = self.eof_deadline - time.monotonic()
        if left <= 0:
            raise ProtocolError(f"process {self.pid} exited but its output never ended "
                                f"(no end-of-file within {EOF_GRACE:.0f}s of EXIT)")
        return left

    def _dispatch(self, what: str, events: int, wake: socket.socket) -> None:
        if what == "ctl":
            for m in self.s.read_control():
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
        if m.type is Msg.EXIT and self.status is None and m.number("id") == self.pid:
            self.status = exit_status(m)
            self.eof_deadline = time.monotonic() + EOF_GRACE
        else:
            self.s.unexpected(f"{m.type.name} while process {self.pid} runs")

    def _read_io(self) -> None:
        try:
            data = self.s.io.recv(1 << 18)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            raise GuestGone("the VM stopped unexpectedly")
        ours = False
        for sid, payload in self.s.io_reader.feed(data):
            # Streams of other processes, our stdin's id, or streams already at EOF: the
            # agent never sends these, and dropping them costs nothing.
            fd = self.out_fd.get(sid)
            if fd is None:
                continue
            ours = True
            if payload:
                _write_all(fd, payload)
            else:
                del self.out_fd[sid]
        if ours:
            # Counted from after our writes, so time blocked on a slow stdout is not idle.
            self.eof_deadline = time.monotonic() + EOF_GRACE

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
