"""Framing and messages of the host <-> agent protocol (docs/protocol.md)."""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from hyperrun.errors import ProtocolError

HEADER = struct.Struct(">II")
CTL_MAX = 1 << 20
IO_MAX = 1 << 16

# What the host keeps of one guest message (the guest is not trusted, docs/protocol.md
# "The host trusts no frame"). The agent's replies are at most 4 KiB and have three keys.
RECORDS_MAX = 64
VALUE_MAX = 4096
KEY_MAX = 256
NUMBER_DIGITS = 10  # a u32 in decimal

CTL_PORT = "org.hyperrun.ctl"
IO_PORT = "org.hyperrun.io"


class Msg(enum.IntEnum):
    CONTAINER = 1
    EXEC = 2
    WINSIZE = 3
    SIGNAL = 4
    # Asked of the container's monitor, never of the guest (docs/protocol.md "The monitor").
    ATTACH = 16
    PS = 17
    OK = 64
    ERROR = 65
    STARTED = 66
    EXIT = 67


# The messages a guest may send; anything else from it is dropped as unexpected.
FROM_GUEST = frozenset({Msg.OK, Msg.ERROR, Msg.STARTED, Msg.EXIT})

# The statuses an ERROR about a process may carry (docs/protocol.md "Exit statuses").
ERROR_STATUSES = (125, 126, 127)


class Stream(enum.IntEnum):
    STDIN = 0
    STDOUT = 1
    STDERR = 2


def stream_id(process_id: int, kind: Stream) -> int:
    return process_id * 4 + kind


def split_stream_id(sid: int) -> tuple[int, Stream]:
    if sid % 4 > Stream.STDERR:
        raise ProtocolError(f"I/O frame for stream {sid}, whose kind {sid % 4} does not exist")
    return sid // 4, Stream(sid % 4)


def shorten(text: str, limit: int = 40) -> str:
    """A prefix of guest text to quote in an error (log.error escapes it when printed)."""
    return text if len(text) <= limit else text[:limit] + "…"


def frame(first: int, payload: bytes) -> bytes:
    return HEADER.pack(first, len(payload)) + payload


def encode_fields(fields: Iterable[tuple[str, str | int]]) -> bytes:
    """Encode (key, value) pairs as NUL-terminated key=value records."""
    out = bytearray()
    for key, value in fields:
        text = f"{key}={value}".encode()
        if b"\0" in text:
            raise ValueError(f"{key!r} contains a NUL byte")
        out += text + b"\0"
    return bytes(out)


@dataclass(frozen=True)
class Message:
    type: Msg
    fields: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.fields:
            if k == key:
                return v
        return default

    def number(self, key: str, default: int | None = None, maximum: int = 0xFFFFFFFF) -> int:
        """A decimal field, strictly: ASCII digits only, at most `maximum`.

        Python's int() would also take signs, spaces, underscores and other scripts'
        digits, and a long enough string costs real time to convert; the guest gets none
        of that. A missing key gives default, or is an error when there is none.
        """
        value = self.get(key)
        if value is None:
            if default is None:
                raise ProtocolError(f"{self.type.name} without {key}")
            return default
        if not (0 < len(value) <= NUMBER_DIGITS and value.isascii() and value.isdigit()):
            raise ProtocolError(f"{self.type.name} with a malformed {key}: '{shorten(value)}'")
        number = int(value)
        if number > maximum:
            raise ProtocolError(f"{self.type.name} with {key}={number}, more than {maximum}")
        return number

    def encode(self) -> bytes:
        return frame(self.type, encode_fields(self.fields))

    @classmethod
    def make(cls, type: Msg, *fields: tuple[str, str | int]) -> Message:
        return cls(type, tuple((k, str(v)) for k, v in fields))

    @classmethod
    def decode(cls, type: int, payload: bytes) -> Message:
        """Parse a payload from the guest, keeping at most VALUE_MAX bytes of each value.

        Any malformation is a ProtocolError: too many records, a record without `=`, a
        key longer than KEY_MAX or a payload whose last record is not NUL-terminated.
        """
        try:
            kind = Msg(type)
        except ValueError as exc:
            raise ProtocolError(f"unknown message type {type}") from exc
        fields: list[tuple[str, str]] = []
        start = 0
        while start < len(payload):
            end = payload.find(b"\0", start)
            if end < 0:
                raise ProtocolError(f"{kind.name} whose last record is not NUL-terminated")
            if len(fields) == RECORDS_MAX:
                raise ProtocolError(f"{kind.name} with more than {RECORDS_MAX} records")
            equals = payload.find(b"=", start, end)
            if equals < 0:
                raise ProtocolError(f"{kind.name} with a record without '='")
            if equals - start > KEY_MAX:
                raise ProtocolError(f"{kind.name} with a key longer than {KEY_MAX} bytes")
            key = payload[start:equals].decode(errors="replace")
            # Cut before decoding: the bytes past VALUE_MAX are never looked at.
            value = payload[equals + 1 : min(end, equals + 1 + VALUE_MAX)]
            fields.append((key, value.decode(errors="replace")))
            start = end + 1
        return cls(kind, tuple(fields))


class FrameReader:
    """Incrementally splits a byte stream into (header field, payload) frames."""

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self._buf += data
        while len(self._buf) >= HEADER.size:
            first, length = HEADER.unpack_from(self._buf)
            if length > self._limit:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self._limit} limit")
            end = HEADER.size + length
            if len(self._buf) < end:
                return
            payload = bytes(self._buf[HEADER.size : end])
            del self._buf[:end]
            yield first, payload


def exit_status(m: Message) -> int:
    """The status of an EXIT: a number 0..255, as a process's exit status can only be."""
    return m.number("status", maximum=255)


def error_status(m: Message) -> int:
    """The status an ERROR about a process asks us to exit with: 125, 126 or 127.

    A missing status is 125; any other number would let the guest pass a failure off as
    success (0) or as the process's own status, so it breaks the protocol.
    """
    status = m.number("status", ERROR_STATUSES[0])
    if status not in ERROR_STATUSES:
        raise ProtocolError(f"ERROR with status={status}; only 125, 126 and 127 are allowed")
    return status
