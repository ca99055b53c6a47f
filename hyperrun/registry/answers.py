"""Reading what a registry answers: bodies under deadlines, and its text fit for messages.

Bodies are read under a transport.Deadline: small documents (manifests, tokens, error
bodies) must arrive whole within pull.stall_timeout, blobs must keep up pull.min_speed.
Text a registry controls is cut to MAX_TEXT characters before it goes into an error; it
is escaped when printed (log.error).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests

from hyperrun.config import PullConfig
from hyperrun.errors import RegistryError, RegistryUnreachable
from hyperrun.registry import transport

MAX_ERROR_BODY = 64 << 10
MAX_TEXT = 200  # characters of registry-supplied text kept in an error message
CHUNK = 1 << 16
SLOW_HINT = ("the registry or the network is stuck or very slow; if it is just slow, raise "
             "pull.stall_timeout (or lower pull.min_speed) in config.yaml")
_ERRNO_RE = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def read_capped(resp: requests.Response, cap: int, what: str, limits: PullConfig) -> bytes:
    """A small document's body, which must arrive whole within stall_timeout."""
    length = content_length(resp)
    if length is not None and length > cap:
        raise RegistryError(f"{what} is {length} bytes; refusing more than {cap}")
    data = bytearray()
    with transport.reading(resp, limits.stall_timeout) as deadline:
        try:
            for chunk in resp.iter_content(CHUNK):
                data += chunk
                if len(data) > cap:
                    raise RegistryError(f"{what} is larger than {cap} bytes; refused")
        except requests.exceptions.RequestException as exc:
            if deadline.fired:
                raise stalled(resp.url, limits, what) from None
            raise RegistryUnreachable(f"reading {what} failed: {reason(exc)}") from None
        if deadline.fired:  # cut short at a point that looked like the end
            raise stalled(resp.url, limits, what)
    return bytes(data)


def error_detail(resp: requests.Response, limits: PullConfig) -> str:
    """The `errors` of a distribution API error body, as `code: message` text."""
    with transport.reading(resp, limits.stall_timeout):
        try:
            raw = resp.raw.read(MAX_ERROR_BODY, decode_content=True) if resp.raw else b""
        except Exception:  # noqa: BLE001 - the body is only decoration for the message
            return ""
    return bounded(error_text(parse_json(raw)))


def iter_blob(resp: requests.Response, what: str, limits: PullConfig) -> Iterator[bytes]:
    """The body of a blob response in chunks, as long as it makes progress.

    Every stall_timeout seconds at least min_speed * stall_timeout bytes must have
    arrived (a byte now and then does not count); a broken or stalled connection is
    RegistryUnreachable.
    """
    window = limits.stall_timeout
    need = max(1, int(limits.min_speed * window))
    # Reads return whole chunks, so progress is seen a chunk at a time: a quarter of what
    # a window needs keeps the measure fair to a link just above min_speed.
    size = min(CHUNK, max(1 << 10, need // 4))
    got = 0
    with transport.reading(resp, window) as deadline:
        try:
            for chunk in resp.iter_content(size):
                got += len(chunk)
                if got >= need:
                    deadline.extend()
                    got = 0
                yield chunk
        except requests.exceptions.RequestException as exc:
            if deadline.fired:
                raise _too_slow(resp, what, need, limits) from None
            raise RegistryUnreachable(f"download interrupted: {reason(exc)}",
                                      hint="run the pull again; finished layers are kept"
                                      ) from None
        if deadline.fired:
            raise _too_slow(resp, what, need, limits)


def stalled(url: str, limits: PullConfig, what: str | None = None) -> RegistryUnreachable:
    where = bounded(urlsplit(url).netloc, 80)
    return RegistryUnreachable(
        f"{what + ': ' if what else ''}{where} sent no complete answer within "
        f"{limits.stall_timeout:g} s; gave up", hint=SLOW_HINT)


def _too_slow(resp: requests.Response, what: str, need: int,
              limits: PullConfig) -> RegistryUnreachable:
    return RegistryUnreachable(
        f"{what}: download stalled: less than {need} bytes in {limits.stall_timeout:g} s "
        f"from {bounded(urlsplit(resp.url).netloc, 80)}", hint=SLOW_HINT)


# ---- text ------------------------------------------------------------------------------------


def reason(exc: BaseException) -> str:
    """The root cause of a requests/urllib3 connection error, e.g. `Connection refused`."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror and not isinstance(
                seen, requests.exceptions.RequestException):
            return str(seen.strerror)
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    match = _ERRNO_RE.search(text)
    if match:
        return bounded(match.group(1).strip())
    if "timed out" in text.lower():
        return "timed out"
    ssl = re.search(r"SSL: ([A-Z_]+)\]?\s*([^(')]*)", text)
    if ssl:
        return bounded((ssl.group(2).strip() or ssl.group(1)).lower())
    return bounded(text)


def content_length(resp: requests.Response) -> int | None:
    """Content-Length if it is a plain number (int() of a huge one would raise)."""
    value = resp.headers.get("Content-Length", "").strip()
    return int(value) if re.fullmatch(r"[0-9]{1,18}", value) else None


def parse_json(data: bytes) -> Any:
    """Parsed JSON, or None for invalid JSON (and JSON nested deep enough to blow the stack)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def error_text(doc: Any) -> str:
    """The `errors` of a distribution API error body as `code: message; ...` text."""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = []
    for e in errors[:10]:
        if not isinstance(e, dict):
            continue
        code, message = e.get("code"), e.get("message")
        code = code.lower().replace("_", " ") if isinstance(code, str) else ""
        message = message if isinstance(message, str) else ""
        parts.append(f"{code}: {message}".strip(": "))
    return "; ".join(p for p in parts if p)


def bounded(text: str, limit: int = MAX_TEXT) -> str:
    """Registry-supplied text cut to limit characters (it is escaped when printed)."""
    return text if len(text) <= limit else text[:limit] + "…"


def duration(seconds: float) -> str:
    if seconds > 10 ** 9:  # inf too
        return "more than 30 years"
    return f"{seconds:.0f} s" if seconds < 3600 else f"{seconds / 3600:.0f} h"
