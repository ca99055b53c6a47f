"""When a run's VM is gone: libvirt no longer lists its domain.

A run does not wait for this (its reaper does, detached); the benchmark watches from a
thread of its own, with its own libvirt connection, so the next run can start meanwhile.
One `listAllDomains` per tick serves every VM being watched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

import libvirt

from hyperrun.vm import hypervisor

TICK = 0.02  # the resolution of vm_gone, in seconds


class GoneWatcher:
    """Stamps (host monotonic time) when each watched domain UUID stops being listed."""

    def __init__(self, uri: str, clock: Callable[[], float] = time.monotonic,
                 tick: float = TICK) -> None:
        self._uri = uri
        self._clock = clock
        self._tick = tick
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._gone: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vm-gone", daemon=True)
        self._conn: libvirt.virConnect | None = None

    def __enter__(self) -> GoneWatcher:
        self._conn = hypervisor.connect(self._uri)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        if self._conn is not None:
            self._conn.close()

    def watch(self, uuid: str) -> None:
        with self._lock:
            if uuid not in self._gone:
                self._pending.add(uuid)

    def listed(self, prefix: str) -> set[str]:
        """The UUIDs of the domains listed now whose names start with prefix."""
        assert self._conn is not None
        return {d.UUIDString() for d in self._conn.listAllDomains(0)
                if d.name().startswith(prefix)}

    def gone_at(self, uuid: str) -> float | None:
        with self._lock:
            return self._gone.get(uuid)

    def wait(self, timeout: float) -> bool:
        """Wait until every watched domain is gone; False if some are still there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return True
            time.sleep(self._tick)
        return False

    def _loop(self) -> None:
        assert self._conn is not None
        while not self._stop.wait(self._tick):
            with self._lock:
                if not self._pending:
                    continue
            try:
                listed = {d.UUIDString() for d in self._conn.listAllDomains(0)}
            except libvirt.libvirtError:
                continue  # a domain vanishing mid-listing; look again next tick
            now = self._clock()
            with self._lock:
                for uuid in self._pending - listed:
                    self._gone[uuid] = now
                self._pending &= listed
