"""A hostile guest over socket pairs: plays the agent's end of both channels in a thread.

The host end is a real GuestSession on the other ends of the pairs, so tests drive
setup_container, start and pump exactly as `hyperrun run` does, with no VM.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

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


class GuestEnd:
    """The guest's ends of the two channels."""

    def __init__(self, ctl: socket.socket, io: socket.socket) -> None:
        self.ctl = ctl
        self.io = io

    def read_frame(self) -> tuple[int, bytes]:
        """One frame the host sent on the control channel (type, payload)."""
        kind, length = HEADER.unpack(self._read_exactly(HEADER.size))
        return kind, self._read_exactly(length)

    def _read_exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.ctl.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("the host closed the control channel")
            buf += chunk
        return buf


Script = Callable[[GuestEnd], None]


def play(script: Script, end: Callable[[], GuestEnd]) -> threading.Thread:
    """Run script on the guest end that `end` returns, in a thread."""
    def run() -> None:
        try:
            script(end())
        except OSError:
            pass  # the host hung up on us, as it should once it gives up

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class FakeGuest(GuestEnd):
    """Socket pairs for ctl and io, a GuestSession on the host ends; `play` runs a script."""

    def __init__(self) -> None:
        host_ctl, ctl = socket.socketpair()
        host_io, io = socket.socketpair()
        super().__init__(ctl, io)
        self.session = GuestSession(host_ctl, host_io)
        self._thread: threading.Thread | None = None

    def play(self, script: Script) -> None:
        self._thread = play(script, lambda: self)

    def close(self) -> None:
        for sock in (self.session.ctl, self.session.io):
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.ctl.close()
        self.io.close()


class ListeningGuest:
    """UNIX sockets where libvirt would put the channels; the guest plays once the host
    has connected to both, as it does in `_boot_and_run`."""

    def __init__(self, ctl_path: Path, io_path: Path) -> None:
        self.servers = []
        for path in (ctl_path, io_path):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            server.listen(1)
            self.servers.append(server)
        self.end: GuestEnd | None = None
        self._thread: threading.Thread | None = None

    def _accept(self) -> GuestEnd:
        self.end = GuestEnd(self.servers[0].accept()[0], self.servers[1].accept()[0])
        return self.end

    def play(self, script: Script) -> None:
        self._thread = play(script, self._accept)

    def close(self) -> None:
        for server in self.servers:
            server.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.end is not None:
            self.end.ctl.close()
            self.end.io.close()
