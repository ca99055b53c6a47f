"""The per-container monitor (`hyperrun-monitor`, monitor/*.c): starting it, reaching it.

QEMU's channel sockets serve one client at a time, and what the guest writes while
nobody is connected is lost. So one small C process per running container holds both
channels for the VM's whole life, writes the main process's output to the container's
log and its exit status to a file, and hands every hyperrun command that connects its
own pair of channels (docs/architecture.md "Who owns a running VM"). A command speaks
the guest protocol on them exactly as if it held QEMU's sockets.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hyperrun import subproc
from hyperrun.errors import BootAssetsMissing, GuestGone
from hyperrun.vm.session import GuestSession

# How long the monitor may take to connect to the channels and say it is ready.
READY_TIMEOUT = 15.0
# How long a command waits to be let in by a monitor that is up.
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class MonitorSpec:
    """Where one container's monitor finds the VM and puts what it keeps."""

    binary: Path
    ctl_socket: Path
    io_socket: Path
    listen: Path  # where commands connect to it (0600, root's)
    dir: Path  # the container's directory: container.log*, exit
    log_max_size: int
    log_max_files: int
    diagnostics: Path  # the monitor's own stderr
    on_exit: tuple[str, ...] = ()  # what it becomes once the VM is gone (restart policy)


def binary(boot_dir: Path) -> Path:
    path = boot_dir / "hyperrun-monitor"
    if not path.is_file():
        raise BootAssetsMissing("container monitor", str(path))
    return path


def spawn(spec: MonitorSpec) -> int:
    """Start the monitor for a VM whose channels exist; its pid once it holds them.

    It detaches itself (its own session, "/" as cwd) and reports `ready PID` on the pipe
    we give it as stdout, so this returns only when nothing the guest says can be lost.
    """
    argv = [spec.binary, "--ctl", spec.ctl_socket, "--io", spec.io_socket,
            "--listen", spec.listen, "--dir", spec.dir,
            "--log-max-size", spec.log_max_size, "--log-max-files", spec.log_max_files]
    if spec.on_exit:
        argv += ["--on-exit", *spec.on_exit]
    line = subproc.start_daemon([str(a) for a in argv], spec.diagnostics, READY_TIMEOUT)
    word, _, pid = line.partition(" ")
    if word != "ready" or not pid.isdigit():
        raise GuestGone(f"the container monitor did not start (see {spec.diagnostics})")
    return int(pid)


def alive(pid: int, listen: Path) -> bool:
    """Whether pid is still the monitor listening on `listen` (pids get reused)."""
    if pid <= 0:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(listen) in argv and argv[0].endswith(b"hyperrun-monitor")


def stop(pid: int, listen: Path, timeout: float = 5.0) -> None:
    """End a monitor (its VM is gone or going) and wait until it has."""
    if not alive(pid, listen):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
    deadline = time.monotonic() + timeout
    while alive(pid, listen) and time.monotonic() < deadline:
        time.sleep(0.02)


def _channels(listen: Path) -> tuple[socket.socket, socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(str(listen))
            _, fds, _, _ = socket.recv_fds(sock, 1, 2)
        except (OSError, TimeoutError) as exc:
            raise GuestGone(f"cannot reach the container's monitor at {listen}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
    finally:
        sock.close()
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        raise GuestGone("the container's monitor turned the connection away (too many "
                        "commands on this container at once?)")
    ctl, io = (socket.socket(fileno=fd) for fd in fds)
    for s in (ctl, io):
        os.set_inheritable(s.fileno(), False)
    return ctl, io


@contextlib.contextmanager
def session(listen: Path) -> Iterator[GuestSession]:
    """A guest session of our own, through the container's monitor."""
    ctl, io = _channels(listen)
    try:
        yield GuestSession(ctl, io)
    finally:
        ctl.close()
        io.close()
