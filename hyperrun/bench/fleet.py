"""Containers a benchmark starts through hyperrun's command line, and removes again.

Each is named `<kind>-<pid>-<random>-<tag>`: all of one run's are found by the prefix, and
those of a run that was killed (its pid gone) are removed by the next run of any kind.
The command line is this interpreter's `-m hyperrun` with this store, so a benchmark
measures the hyperrun it belongs to.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

from hyperrun.containers import records
from hyperrun.errors import HyperrunError
from hyperrun.store import Store, process_alive

HYPERRUN = (sys.executable, "-m", "hyperrun")
IDLE = ("sleep", "2147483647")
KINDS = ("bench", "compare")
TIMEOUT = 300.0
MAX_OUTPUT = 1 << 20  # what one command an instance runs may print (probes print ~1 KiB)
_OWNED = re.compile(r"(?:bench|compare)-(\d+)-[0-9a-f]{6}-")


class FleetError(HyperrunError):
    pass


def capture(argv: Sequence[str], env: dict[str, str], *, limit: int = MAX_OUTPUT,
            timeout: float = TIMEOUT, cwd: str | None = None) -> tuple[int, bytes, bytes]:
    """Run argv; its status, stdout and stderr, each read up to limit bytes. What runs in
    an instance is untrusted: past the limit or the timeout, the command is killed."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=cwd)
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout.fileno(), proc.stderr.fileno()
    out = {stdout: bytearray(), stderr: bytearray()}
    deadline = time.monotonic() + timeout
    try:
        with proc.stdout, proc.stderr, selectors.DefaultSelector() as sel:
            for fd in out:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                ready = sel.select(max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise FleetError(f"{argv[-1][:40]!r} took over {timeout:g} s",
                                     hint="the instance may be stuck")
                for key, _ in ready:
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fd)
                    elif len(out[key.fd]) + len(chunk) > limit:
                        raise FleetError(f"a probe printed over {limit} bytes",
                                         hint="the image's shell or tools misbehave")
                    else:
                        out[key.fd] += chunk
        return proc.wait(timeout), bytes(out[stdout]), bytes(out[stderr])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def environment(store: Store) -> dict[str, str]:
    # Ourselves, with the caller's environment (HYPERRUN_TB_CACHE_MIB, ...) and this store:
    # not subproc.run, which gives external tools a fixed environment.
    return {**os.environ, "HYPERRUN_ROOT": str(store.root)}


def timed(store: Store, argv: Sequence[str]) -> tuple[float, int]:
    """Wall time and exit status of a command, its output discarded."""
    start = time.monotonic()
    status = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=environment(store))
    return time.monotonic() - start, status


class Fleet:
    """The containers one benchmark run started; all removed on leaving, whatever the reason."""

    def __init__(self, store: Store, kind: str = "bench") -> None:
        assert kind in KINDS
        self.store = store
        self.prefix = f"{kind}-{os.getpid()}-{secrets.token_hex(3)}-"

    def hyperrun(self, *args: str, check: bool = True,
                 timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        status, out, err = capture([*HYPERRUN, *args], environment(self.store),
                                   timeout=timeout)
        stderr = err.decode(errors="replace")
        if check and status != 0:
            last = (stderr.strip().splitlines() or [f"status {status}"])[-1]
            raise FleetError(f"`hyperrun {args[0]}` failed: {last[:300]}",
                             hint=f"try `hyperrun {args[0]}` on its own")
        return subprocess.CompletedProcess(args, status, out.decode(errors="replace"), stderr)

    def start(self, tag: str, *, memory_mib: int, cpus: int = 1,
              command: Sequence[str] = IDLE, image: str = "busybox") -> str:
        """Start a detached container; its full id."""
        out = self.hyperrun("run", "-d", "-q", "--pull", "never", "--name", self.prefix + tag,
                            "--cpus", str(cpus), "--memory", f"{memory_mib}m", image,
                            *command).stdout
        return out.split()[-1]

    def ids(self, running_only: bool = False, pattern: str = "") -> list[str]:
        args = ["ps", "-q", "--no-trunc", "--filter", f"name=^{self.prefix}{pattern}"]
        return self.hyperrun(*args, *([] if running_only else ["-a"])).stdout.split()

    def remove(self, pattern: str = "") -> None:
        ids = self.ids(pattern=pattern)
        if ids:
            self.hyperrun("rm", "-f", *ids, check=False, timeout=600)

    @contextlib.contextmanager
    def cleanup(self) -> Iterator[Fleet]:
        sweep(self.store, self)
        try:
            yield self
        finally:
            # A second Ctrl-C must not cut the removal short.
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                self.remove()
            finally:
                signal.signal(signal.SIGINT, old)


def sweep(store: Store, fleet: Fleet) -> None:
    """Remove the containers of benchmark runs that died without removing them."""
    stale = []
    for c in records.all_containers(store):
        found = _OWNED.match(c.name)
        if found and not process_alive(int(found[1])):
            stale.append(c.id)
    if stale:
        fleet.hyperrun("rm", "-f", *stale, check=False, timeout=600)
