"""A hostile guest over socket pairs: plays the agent's end of both channels in a thread.

The host end is a real GuestSession on the other ends of the pairs, so tests drive
setup_container, start and pump exactly as `hyperrun run` does, with no VM.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from hyperrun.vm.protocol import HEADER, Msg, Stream, frame, stream_id
from hyperrun.vm.session import GuestSession


def records(*fields: tuple[str, str | int | bytes]) -> bytes:
    """A control payload, with no checks: values may hold anything a hostile guest likes."""
    out = b""
    for key, value in fields:
        raw = value if isinstance(value, bytes) else str(value).encode()
        out += key.encode() + b"=" + raw + b"\0"
    return out


def ctl(kind: int, *fields: tuple[str, str | int | bytes]) -> bytes:
    return frame(kind, records(*fields))


def out(pid: int, data: bytes, kind: Stream = Stream.STDOUT) -> bytes:
    return frame(stream_id(pid, kind), data)


def eofs(pid: int) -> bytes:
    return out(pid, b"", Stream.STDOUT) + out(pid, b"", Stream.STDERR)


def started(pid: int = 1) -> bytes:
    return ctl(Msg.STARTED, ("id", pid), ("pid", 42))


def exited(pid: int = 1, status: str | int | bytes = 0) -> bytes:
    return ctl(Msg.EXIT, ("id", pid), ("status", status))


class FakeGuest:
    """Socket pairs for ctl and io; `play` runs a script as the guest in a thread."""

    def __init__(self) -> None:
        host_ctl, self.ctl = socket.socketpair()
        host_io, self.io = socket.socketpair()
        self.session = GuestSession(host_ctl, host_io)
        self._thread: threading.Thread | None = None

    def play(self, script: Callable[[FakeGuest], None]) -> None:
        def run() -> None:
            try:
                script(self)
            except OSError:
                pass  # the host hung up on us, as it should once it gives up

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def read_frame(self) -> tuple[int, bytes]:
        """One frame the host sent on the control channel (type, payload)."""
        header = self._read_exactly(HEADER.size)
        kind, length = HEADER.unpack(header)
        return kind, self._read_exactly(length)

    def _read_exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.ctl.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("the host closed the control channel")
            buf += chunk
        return buf

    def close(self) -> None:
        for sock in (self.session.ctl, self.session.io):
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.ctl.close()
        self.io.close()
