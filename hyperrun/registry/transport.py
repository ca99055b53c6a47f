"""HTTP plumbing below the registry client: bounded retries and deadlines on connections.

A socket read timeout only bounds the wait for the *next* byte, so a server that sends a
byte every few seconds keeps a request alive for days, and urllib3 sleeps for whatever
Retry-After a server asks. Here a Retry-After beyond a cap ends the retries instead, and
each request can carry a Deadline: a watchdog thread shuts the request's socket down when
the deadline passes, which wakes the blocked read with an error in the reading thread.

Connections learn their deadline when they start reading an answer (getresponse) and
forget it when they go back to the pool, so a deadline never cuts a connection that
another request has taken over since.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

_SECONDS_RE = re.compile(r"\s*([0-9]+)\s*")
_lock = threading.Condition()  # guards every Deadline and connection binding below
_current = threading.local()  # the Deadline of this thread's request being sent


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date); None if unusable."""
    if not value:
        return None
    match = _SECONDS_RE.fullmatch(value)
    if match:
        return float(match.group(1))  # a huge number is inf, never an error
    try:
        when = email.utils.parsedate_to_datetime(value.strip()[:64])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        return max(0.0, when.timestamp() - time.time())
    except (ValueError, OverflowError, OSError):
        return None


class CappedRetry(Retry):
    """urllib3's Retry, but an answer whose Retry-After exceeds wait_cap is not retried.

    The answer is then handed back as it is (raise_on_status is off), so the client can
    report it; Retry-After headers that do not parse count as absent instead of raising.
    """

    wait_cap: float = 30.0

    def new(self, **kw: Any) -> CappedRetry:
        retry = super().new(**kw)
        retry.wait_cap = self.wait_cap
        return retry

    def parse_retry_after(self, retry_after_header: str) -> float:
        return min(retry_after(retry_after_header) or 0.0, self.wait_cap)

    def get_retry_after(self, response: Any) -> float | None:
        return min(retry_after(response.headers.get("Retry-After")) or 0.0, self.wait_cap)

    def increment(self, method: str | None = None, url: str | None = None,
                  response: Any = None, error: Exception | None = None,
                  _pool: Any = None, _stacktrace: Any = None) -> CappedRetry:
        if response is not None:
            wait = retry_after(response.headers.get("Retry-After"))
            if wait is not None and wait > self.wait_cap:
                raise MaxRetryError(_pool, url or "", None)  # type: ignore[arg-type]
        return super().increment(method, url, response, error, _pool, _stacktrace)


class Deadline:
    """A time limit for one request: at `expires` its connection is shut down.

    `seconds` is re-armed by attach (an answer starts) and extend (enough progress).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = math.inf
        self.fired = False
        self._conn: _Guarded | None = None

    def attach(self, conn: _Guarded) -> None:
        with _lock:
            if self._conn is not None and self._conn._deadline is self:
                self._conn._deadline = None
            conn._deadline = self
            self._conn = conn
            self.expires = time.monotonic() + self.seconds
            _watchdog.arm(self)

    def extend(self) -> None:
        """Enough progress was made: the next window starts now."""
        self.expires = time.monotonic() + self.seconds  # only ever later: no wake-up needed

    def close(self) -> None:
        with _lock:
            _watchdog.disarm(self)
            if self._conn is not None and self._conn._deadline is self:
                self._conn._deadline = None
            self._conn = None

    def _fire(self) -> None:
        """Called by the watchdog, with _lock held."""
        conn, self._conn = self._conn, None
        if conn is None or conn._deadline is not self:
            return  # its connection went back to the pool: nothing to cut
        conn._deadline = None
        self.fired = True
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                # The base class's shutdown, also for TLS sockets: it only wakes the reader
                # and leaves the TLS object alone.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that fires deadlines; it sleeps until the earliest one."""

    def __init__(self) -> None:
        self._armed: set[Deadline] = set()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: Deadline) -> None:
        self._armed.add(deadline)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="registry-watchdog",
                                            daemon=True)
            self._thread.start()
        _lock.notify()

    def disarm(self, deadline: Deadline) -> None:
        self._armed.discard(deadline)

    def _run(self) -> None:
        with _lock:
            while True:
                now = time.monotonic()
                for deadline in [d for d in self._armed if d.expires <= now]:
                    self._armed.discard(deadline)
                    deadline._fire()
                soonest = min((d.expires for d in self._armed), default=None)
                _lock.wait(None if soonest is None else max(0.01, soonest - now))


_watchdog = _Watchdog()


@contextlib.contextmanager
def sending(seconds: float) -> Iterator[Deadline]:
    """A deadline for the answers to requests this thread sends inside the block.

    Each answer (each retry's too) must arrive, head and body read, within seconds of
    its start; reading bodies after the block needs `reading`.
    """
    deadline = Deadline(seconds)
    previous = getattr(_current, "deadline", None)
    _current.deadline = deadline
    try:
        yield deadline
    finally:
        _current.deadline = previous
        deadline.close()


@contextlib.contextmanager
def reading(resp: requests.Response, seconds: float) -> Iterator[Deadline]:
    """A deadline for reading resp's body inside the block; extend() it on progress."""
    deadline = Deadline(seconds)
    conn = getattr(resp.raw, "connection", None)
    if isinstance(conn, _Guarded):
        deadline.attach(conn)
    try:
        yield deadline
    finally:
        deadline.close()


# ---- connections that take part ---------------------------------------------------------


class _Guarded(HTTPConnection):
    _deadline: Deadline | None = None

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.attach(self)
        return super().getresponse(*args, **kwargs)


class _GuardedHTTPS(_Guarded, HTTPSConnection):
    pass


def _release(conn: Any) -> None:
    """A connection goes back to the pool: its deadline must not cut it any more."""
    if isinstance(conn, _Guarded):
        with _lock:
            deadline, conn._deadline = conn._deadline, None
            if deadline is not None:
                deadline._conn = None
                _watchdog.disarm(deadline)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Guarded

    def _put_conn(self, conn: Any) -> None:
        _release(conn)
        super()._put_conn(conn)


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPS

    def _put_conn(self, conn: Any) -> None:
        _release(conn)
        super()._put_conn(conn)


class Adapter(HTTPAdapter):
    """requests' adapter with connections that deadlines can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _guard(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        _guard(manager)
        return manager


def _guard(manager: Any) -> None:
    # Only the stock pools are replaced (a SOCKS proxy brings its own, left as they are);
    # a new dict, since the manager shares urllib3's module-level one.
    classes = getattr(manager, "pool_classes_by_scheme", None)
    if classes is not None and classes.get("http") is HTTPConnectionPool \
            and classes.get("https") is HTTPSConnectionPool:
        manager.pool_classes_by_scheme = {"http": _Pool, "https": _HTTPSPool}
