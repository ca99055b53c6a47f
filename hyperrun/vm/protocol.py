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

CTL_PORT = "org.hyperrun.ctl"
IO_PORT = "org.hyperrun.io"


class Msg(enum.IntEnum):
    CONTAINER = 1
    EXEC = 2
    WINSIZE = 3
    SIGNAL = 4
    OK = 64
    ERROR = 65
    STARTED = 66
    EXIT = 67


class Stream(enum.IntEnum):
    STDIN = 0
    STDOUT = 1
    STDERR = 2


def stream_id(process_id: int, kind: Stream) -> int:
    return process_id * 4 + kind


def split_stream_id(sid: int) -> tuple[int, Stream]:
    return sid // 4, Stream(sid % 4)


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

    def number(self, key: str, default: int = 0) -> int:
        value = self.get(key)
        return default if value is None else int(value)

    def encode(self) -> bytes:
        return frame(self.type, encode_fields(self.fields))

    @classmethod
    def make(cls, type: Msg, *fields: tuple[str, str | int]) -> Message:
        return cls(type, tuple((k, str(v)) for k, v in fields))

    @classmethod
    def decode(cls, type: int, payload: bytes) -> Message:
        try:
            kind = Msg(type)
        except ValueError as exc:
            raise ProtocolError(f"unknown message type {type}") from exc
        fields = []
        for record in payload.split(b"\0")[:-1] if payload else []:
            key, sep, value = record.decode(errors="replace").partition("=")
            if not sep:
                raise ProtocolError(f"record without '=' in {kind.name}")
            fields.append((key, value))
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
