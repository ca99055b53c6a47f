"""hyperrun-monitor against a fake QEMU: two listening sockets played by the test as the
guest agent, and clients that connect to the monitor and receive their two fds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_guest import ctl, eofs, exited, out, started

from hyperrun.spec import ProcessSpec
from hyperrun.vm.protocol import HEADER, Msg, Stream, encode_fields, frame, stream_id
from hyperrun.vm.session import GuestSession

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0
VANISHED = "137\nthe VM ended before the container's main process exited\n"
HOSTILE = "125\nthe guest broke the protocol\n"
# Monitor-only requests (not in protocol.Msg: the guest never sees them).
ATTACH = 16
PS = 17


@pytest.fixture(scope="session")
def monitor_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    env = {**os.environ, "HYPERRUN_CACHE": str(cache)}
    built = subprocess.run(["bash", str(REPO / "monitor" / "build")], check=True,
                           capture_output=True, text=True, env=env)
    return Path(built.stdout.strip().splitlines()[-1])


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    first, length = HEADER.unpack(recv_exactly(sock, HEADER.size))
    return first, recv_exactly(sock, length)


def fields(payload: bytes) -> list[tuple[str, str]]:
    return [tuple(r.decode().split("=", 1)) for r in payload.split(b"\0")[:-1]]  # type: ignore


def read_msg(sock: socket.socket) -> tuple[Msg, dict[str, str]]:
    kind, payload = read_frame(sock)
    return Msg(kind), dict(fields(payload))


def at_eof(sock: socket.socket, timeout: float = TIMEOUT) -> bool:
    """Whether the peer hangs up within timeout (data before the EOF is discarded)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def wait_until(cond, timeout: float = TIMEOUT) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def exec_msg(pid: int, main: bool = False) -> bytes:
    return frame(Msg.EXEC, encode_fields([("id", pid), ("arg", "sh"), ("main", int(main))]))


class Client:
    """One hyperrun command: its ctl and io fds from the monitor."""

    def __init__(self, path: Path) -> None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(TIMEOUT)
        conn.connect(str(path))
        msg, fds, _, _ = socket.recv_fds(conn, 1, 2)
        conn.close()
        assert msg == b"H" and len(fds) == 2
        self.ctl = socket.socket(fileno=fds[0])
        self.io = socket.socket(fileno=fds[1])
        for s in (self.ctl, self.io):
            s.settimeout(TIMEOUT)

    def send(self, data: bytes) -> None:
        self.ctl.sendall(data)

    def msg(self) -> tuple[Msg, dict[str, str]]:
        return read_msg(self.ctl)

    def output(self, pid: int, eofs: int = 2) -> tuple[bytes, bytes]:
        """stdout and stderr of pid until `eofs` EOF frames; frames of others fail."""
        got = {Stream.STDOUT: b"", Stream.STDERR: b""}
        while eofs:
            sid, data = read_frame(self.io)
            assert sid // 4 == pid, f"frame of process {sid // 4} reached {pid}'s client"
            got[Stream(sid % 4)] += data
            eofs -= not data
        return got[Stream.STDOUT], got[Stream.STDERR]

    def close(self) -> None:
        self.ctl.close()
        self.io.close()


class Monitor:
    """A fake QEMU (two listening sockets), the monitor connected to it, the guest's ends."""

    def __init__(self, binary: Path, tmp: Path, max_size: int = 1 << 20,
                 max_files: int = 3, on_exit: tuple[str, ...] = ()) -> None:
        self.dir = tmp / "ctr"
        self.dir.mkdir()
        self.sock = tmp / "mon.sock"
        servers = []
        for name in ("ctl", "io"):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(tmp / f"{name}.sock"))
            server.listen(1)
            server.settimeout(TIMEOUT)
            servers.append(server)
        self.stderr = tmp / "monitor.err"
        with open(self.stderr, "wb") as err:
            proc = subprocess.Popen(
                [str(binary), "--ctl", str(tmp / "ctl.sock"), "--io", str(tmp / "io.sock"),
                 "--listen", str(self.sock), "--dir", str(self.dir),
                 "--log-max-size", str(max_size), "--log-max-files", str(max_files),
                 *(("--on-exit", *on_exit) if on_exit else ())],
                stdout=subprocess.PIPE, stderr=err)
        assert proc.wait(timeout=TIMEOUT) == 0  # the parent returns at once
        self.ctl, _ = servers[0].accept()
        self.io, _ = servers[1].accept()
        for s in servers:
            s.close()
        for s in (self.ctl, self.io):
            s.settimeout(TIMEOUT)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        proc.stdout.close()
        assert line.startswith("ready ") and line.endswith("\n"), line
        self.pid = int(line.split()[1])

    def client(self) -> Client:
        return Client(self.sock)

    def guest_msg(self) -> tuple[Msg, dict[str, str]]:
        return read_msg(self.ctl)

    def start(self, client: Client, pid: int, main: bool = False) -> None:
        """client starts pid; the guest answers STARTED."""
        client.send(exec_msg(pid, main))
        kind, f = self.guest_msg()
        assert (kind, f["id"]) == (Msg.EXEC, str(pid))
        self.ctl.sendall(started(pid))
        assert client.msg() == (Msg.STARTED, {"id": str(pid), "pid": "42"})

    def exit_file(self) -> str | None:
        path = self.dir / "exit"
        return path.read_text() if path.exists() else None

    def alive(self) -> bool:
        return not gone(self.pid)

    def close(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        for s in (self.ctl, self.io):
            s.close()


@pytest.fixture
def mon(monitor_bin: Path, tmp_path: Path) -> Iterator[Monitor]:
    m = Monitor(monitor_bin, tmp_path)
    yield m
    m.close()


def test_bad_arguments_exit_2(monitor_bin: Path) -> None:
    for argv in ([], ["--ctl", "a"], ["--bogus"],
                 ["--ctl", "a", "--io", "b", "--listen", "c", "--dir", "d",
                  "--log-max-size", "x", "--log-max-files", "3"]):
        done = subprocess.run([str(monitor_bin), *argv], capture_output=True, text=True)
        assert done.returncode == 2 and "hyperrun-monitor:" in done.stderr


def test_no_qemu_socket_means_no_ready(monitor_bin: Path, tmp_path: Path) -> None:
    err = tmp_path / "err"
    with open(err, "wb") as e:
        proc = subprocess.Popen(
            [str(monitor_bin), "--ctl", str(tmp_path / "none"), "--io", str(tmp_path / "none"),
             "--listen", str(tmp_path / "mon"), "--dir", str(tmp_path),
             "--log-max-size", "1000", "--log-max-files", "2", "--connect-timeout", "1"],
            stdout=subprocess.PIPE, stderr=e)
        assert proc.stdout is not None
        assert proc.stdout.read() == b""  # the child closed its stdout without `ready`
    assert proc.wait() == 0
    assert "cannot connect" in err.read_text()
    assert not (tmp_path / "mon").exists()


def test_setup_and_two_clients_exec_concurrently(mon: Monitor) -> None:
    a, b = mon.client(), mon.client()
    container = ctl(Msg.CONTAINER, ("hostname", "h"), ("rootfs", "vda"), ("fstype", "ext4"))
    a.send(container)
    assert mon.guest_msg() == (Msg.CONTAINER, {"hostname": "h", "rootfs": "vda",
                                              "fstype": "ext4"})
    mon.ctl.sendall(ctl(Msg.OK))
    assert a.msg() == (Msg.OK, {})
    b.send(container)
    assert b.msg() == (Msg.ERROR, {"status": "125",
                                   "message": "the container is already set up"})
    mon.start(a, 1, main=True)
    mon.start(b, 2)
    for i in range(50):
        mon.io.sendall(out(1, b"a%d\n" % i) + out(2, b"b%d\n" % i, Stream.STDERR))
    mon.io.sendall(eofs(2) + eofs(1))
    mon.ctl.sendall(exited(2, 7) + exited(1, 0))
    assert b.output(2) == (b"", b"".join(b"b%d\n" % i for i in range(50)))
    assert b.msg() == (Msg.EXIT, {"id": "2", "status": "7"})
    assert a.output(1) == (b"".join(b"a%d\n" % i for i in range(50)), b"")
    assert a.msg() == (Msg.EXIT, {"id": "1", "status": "0"})
    assert mon.exit_file() == "0\n\n"


def test_duplicate_and_invalid_ids_are_refused(mon: Monitor) -> None:
    a, b = mon.client(), mon.client()
    mon.start(a, 1, main=True)
    b.send(exec_msg(1))
    assert b.msg() == (Msg.ERROR, {"id": "1", "status": "125",
                                   "message": "process id 1 is in use"})
    for bad in ("0", "x1", "+3", "1073741824", ""):
        b.send(ctl(Msg.EXEC, ("id", bad)))
        assert b.msg() == (Msg.ERROR, {"status": "125", "message": "invalid process id"})
    # Nothing of that reached the guest: the next frame it sees is the SIGNAL.
    b.send(ctl(Msg.SIGNAL, ("id", 1), ("signal", 9)))
    assert mon.guest_msg() == (Msg.SIGNAL, {"id": "1", "signal": "9"})
    # Once a process has exited its id is free again.
    mon.start(a, 2)
    mon.ctl.sendall(exited(2, 0))
    assert a.msg()[0] == Msg.EXIT
    mon.start(b, 2)
    # Once the main process has exited, the VM is on its way out: nothing new starts.
    mon.ctl.sendall(exited(1, 0))
    assert a.msg()[0] == Msg.EXIT
    b.send(exec_msg(3))
    assert b.msg() == (Msg.ERROR, {"id": "3", "status": "125",
                                   "message": "the container is stopping"})


def test_attach_sees_main_output_and_exit(mon: Monitor) -> None:
    run = mon.client()
    mon.start(run, 1, main=True)
    mon.io.sendall(out(1, b"before\n"))
    assert read_frame(run.io) == (stream_id(1, Stream.STDOUT), b"before\n")
    att = mon.client()
    att.send(ctl(ATTACH, ("id", 1)))
    assert att.msg() == (Msg.OK, {})
    att.send(ctl(ATTACH, ("id", 5)))
    assert att.msg() == (Msg.ERROR, {"id": "5", "status": "1", "message": "no such process"})
    att.send(ctl(PS))
    assert att.msg() == (Msg.OK, {"proc": "1"})
    mon.io.sendall(out(1, b"after\n") + eofs(1))
    mon.ctl.sendall(exited(1, 3))
    assert att.output(1) == (b"after\n", b"")  # no replay of "before"
    assert att.msg() == (Msg.EXIT, {"id": "1", "status": "3"})
    assert run.output(1) == (b"after\n", b"")
    assert mon.exit_file() == "3\n\n"


def test_eof_after_exit_still_reaches_the_owner(mon: Monitor) -> None:
    a = mon.client()
    mon.start(a, 1, main=True)
    mon.start(a, 2)
    mon.ctl.sendall(exited(2, 0))
    assert a.msg() == (Msg.EXIT, {"id": "2", "status": "0"})
    time.sleep(0.1)
    mon.io.sendall(out(2, b"late") + eofs(2))
    assert a.output(2) == (b"late", b"")


def parse_log(data: bytes) -> list[tuple[str, bytes]]:
    records = []
    while data:
        header, data = data.split(b"\n", 1)
        stamp, stream, length = header.decode().split(" ")
        seconds, nanos = stamp.split(".")
        assert seconds.isdigit() and len(nanos) == 9 and nanos.isdigit()
        n = int(length)
        assert data[n:n + 1] == b"\n"
        records.append((stream, data[:n]))
        data = data[n + 1:]
    return records


def test_log_records(mon: Monitor) -> None:
    (mon.dir / "container.log").write_bytes(b"")
    a, b = mon.client(), mon.client()
    mon.start(a, 1, main=True)
    mon.start(b, 2)
    mon.io.sendall(out(1, b"hello\nwor") + out(1, b"ld\n\x00\xff\n", Stream.STDERR)
                   + out(2, b"not main\n") + eofs(1))
    mon.ctl.sendall(exited(1, 0))
    a.output(1)
    log = mon.dir / "container.log"
    assert wait_until(lambda: len(parse_log(log.read_bytes())) == 4)
    assert parse_log(log.read_bytes()) == [
        ("stdout", b"hello\n"), ("stdout", b"wor"), ("stderr", b"ld\n"),
        ("stderr", b"\x00\xff\n")]
    assert log.stat().st_mode & 0o777 == 0o600


def test_log_rotation_bounds_the_disk(monitor_bin: Path, tmp_path: Path) -> None:
    mon = Monitor(monitor_bin, tmp_path, max_size=1 << 20, max_files=3)
    try:
        a = mon.client()
        mon.start(a, 1, main=True)
        a.close()  # nobody reads: the log still gets everything
        line = b"x" * 999 + b"\n"
        chunk = line * 64
        for i in range(800):  # about 51 MB
            mon.io.sendall(out(1, chunk[:-10] + b"%09d\n" % i))
        mon.io.sendall(out(1, b"the end\n"))
        log = mon.dir / "container.log"
        assert wait_until(lambda: log.read_bytes().endswith(b" 8\nthe end\n\n"), 60)
        files = sorted(mon.dir.glob("container.log*"))
        assert [f.name for f in files] == ["container.log", "container.log.1",
                                           "container.log.2"]
        record_max = 64 + len(line)
        assert sum(f.stat().st_size for f in files) <= 3 * (1 << 20) + record_max
        for f in files:
            assert f.stat().st_size <= 1 << 20
        newest = parse_log((mon.dir / "container.log.1").read_bytes() + log.read_bytes())
        assert newest[-2][1] == b"x" * 990 + b"000000799\n"
    finally:
        mon.close()


def test_single_log_file_is_truncated(monitor_bin: Path, tmp_path: Path) -> None:
    mon = Monitor(monitor_bin, tmp_path, max_size=10000, max_files=1)
    try:
        a = mon.client()
        mon.start(a, 1, main=True)
        for i in range(100):
            mon.io.sendall(out(1, b"%0999d\n" % i))
        log = mon.dir / "container.log"
        assert wait_until(lambda: b"%0999d\n" % 99 in log.read_bytes())
        assert log.stat().st_size <= 10000
        assert sorted(p.name for p in mon.dir.glob("container.log*")) == ["container.log"]
    finally:
        mon.close()


def test_exit_file_for_main_error(mon: Monitor) -> None:
    a = mon.client()
    a.send(exec_msg(1, main=True))
    mon.guest_msg()
    mon.ctl.sendall(ctl(Msg.ERROR, ("id", 1), ("status", 127),
                        ("message", b"not found\x1b[2J\n" + b"y" * 1000)))
    kind, f = a.msg()
    assert (kind, f["status"]) == (Msg.ERROR, "127")
    status, message, rest = mon.exit_file().split("\n")  # type: ignore[union-attr]
    assert (status, rest) == ("127", "")
    assert message == ("not found?[2J?" + "y" * 1000)[:512]


def test_exit_file_for_invalid_status(mon: Monitor) -> None:
    a = mon.client()
    mon.start(a, 1, main=True)
    mon.ctl.sendall(exited(1, "-1"))
    assert a.msg()[0] == Msg.EXIT
    assert mon.exit_file() == "125\nthe guest reported an invalid exit status\n"


def test_guest_vanishing_writes_137_and_ends(mon: Monitor) -> None:
    a = mon.client()
    mon.start(a, 1, main=True)
    mon.ctl.close()
    mon.io.close()
    assert at_eof(a.ctl) and at_eof(a.io)
    assert wait_until(lambda: not mon.alive())
    assert mon.exit_file() == VANISHED


def test_it_becomes_the_on_exit_program_once_the_vm_is_gone(
        monitor_bin: Path, tmp_path: Path) -> None:
    """The restart policy's judge runs after the exit file is written, as a fresh process."""
    seen = tmp_path / "seen"
    script = f'cat {tmp_path}/ctr/exit > {seen}; grep SigBlk /proc/self/status >> {seen}'
    m = Monitor(monitor_bin, tmp_path, on_exit=("/bin/sh", "-c", script))
    try:
        m.ctl.close()
        m.io.close()
        assert wait_until(lambda: seen.exists() and "SigBlk" in seen.read_text())
        status, message, blocked = seen.read_text().splitlines()
        assert status == "137" and "VM ended" in message
        assert blocked.split()[1] == "0" * 16  # nothing blocked that the judge needs
    finally:
        m.close()


def test_sigterm_is_a_hang_up(mon: Monitor) -> None:
    os.kill(mon.pid, signal.SIGTERM)
    assert at_eof(mon.ctl) and at_eof(mon.io)
    assert wait_until(lambda: not mon.alive())
    assert mon.exit_file() == VANISHED


def test_hangs_up_after_main_exit_once_clients_are_done(mon: Monitor) -> None:
    a = mon.client()
    mon.start(a, 1, main=True)
    mon.io.sendall(out(1, b"bye\n") + eofs(1))
    mon.ctl.sendall(exited(1, 0))
    assert a.output(1) == (b"bye\n", b"")
    assert a.msg()[0] == Msg.EXIT
    time.sleep(0.3)
    assert mon.alive()  # a's queues are empty, but it is connected: up to 5 s
    a.close()
    assert at_eof(mon.ctl, 3) and at_eof(mon.io, 3)
    assert wait_until(lambda: not mon.alive())
    assert mon.exit_file() == "0\n\n"


def test_hangs_up_5s_after_main_exit_with_an_idle_client(mon: Monitor) -> None:
    a = mon.client()
    mon.start(a, 1, main=True)
    mon.ctl.sendall(exited(1, 0))
    started_at = time.monotonic()
    assert at_eof(mon.ctl, 10)
    assert 4 < time.monotonic() - started_at < 8
    assert at_eof(a.ctl)


@pytest.mark.parametrize("sock,data", [
    ("ctl", HEADER.pack(Msg.OK, (1 << 20) + 1)),
    ("io", HEADER.pack(stream_id(1, Stream.STDOUT), (1 << 16) + 1)),
])
def test_oversized_guest_frame_is_hostile(mon: Monitor, sock: str, data: bytes) -> None:
    a = mon.client()
    mon.start(a, 1, main=True)
    getattr(mon, sock).sendall(data)
    assert at_eof(a.ctl)
    assert wait_until(lambda: not mon.alive())
    assert mon.exit_file() == HOSTILE


def test_hostile_guest_floods_cost_no_memory(mon: Monitor) -> None:
    a = mon.client()
    mon.start(a, 1, main=True)
    # Anomalies a little under the limit: dropped, counted, no harm done.
    junk = [ctl(99, ("id", 1)), ctl(Msg.EXIT, ("id", "1x"), ("status", 0)),
            ctl(Msg.STARTED, ("id", 7)), frame(Msg.OK, b"no record"),
            ctl(Msg.EXIT, ("id", "-1"), ("status", 0)), ctl(Msg.OK)]
    for _ in range(100):
        mon.ctl.sendall(b"".join(junk))
        mon.io.sendall(out(9, b"x" * 100) + frame(stream_id(1, Stream.STDIN), b"x"))
    # A huge partial frame: announced, never completed.
    mon.ctl.sendall(HEADER.pack(Msg.ERROR, 1 << 20) + b"\0" * ((1 << 20) - 1))
    time.sleep(0.3)
    assert mon.alive()
    assert rss_kib(mon.pid) < 16 * 1024
    a.send(ctl(PS))
    assert a.msg() == (Msg.OK, {"proc": "1"})
    mon.io.sendall(out(1, b"still here\n"))
    assert read_frame(a.io) == (stream_id(1, Stream.STDOUT), b"still here\n")
    # The thousandth anomaly makes it hostile.
    for _ in range(250):
        mon.io.sendall(out(9, b"x"))
    assert at_eof(a.ctl)
    assert wait_until(lambda: not mon.alive())
    assert mon.exit_file() == HOSTILE
    assert len((mon.stderr).read_text().splitlines()) < 10


def test_a_subscriber_that_never_reads_is_dropped(mon: Monitor) -> None:
    run = mon.client()
    mon.start(run, 1, main=True)
    lazy = mon.client()
    lazy.send(ctl(ATTACH, ("id", 1)))
    assert lazy.msg() == (Msg.OK, {})
    total = 24 << 20

    def flood() -> None:
        chunk = b"z" * 65536
        for _ in range(total // len(chunk)):
            mon.io.sendall(out(1, chunk))
        mon.io.sendall(eofs(1))

    writer = threading.Thread(target=flood, daemon=True)
    writer.start()
    got, _ = run.output(1)
    assert len(got) == total
    writer.join(TIMEOUT)
    assert at_eof(lazy.ctl)  # dropped, instead of stalling the container
    assert rss_kib(mon.pid) < 32 * 1024


def test_an_owner_that_never_reads_pauses_only_the_guest_io(mon: Monitor) -> None:
    lazy, other = mon.client(), mon.client()
    mon.start(lazy, 1, main=True)
    mon.start(other, 2)
    frames = 0

    def flood() -> None:
        nonlocal frames
        for _ in range(400):  # 25 MiB
            mon.io.sendall(out(1, b"q" * 65536))
            frames += 1

    mon.io.settimeout(None)
    writer = threading.Thread(target=flood, daemon=True)
    writer.start()
    last = -1
    while frames != last:
        last = frames
        time.sleep(0.5)
    assert frames < 200  # the guest blocks like a pipe; the monitor does not hoard
    # Control still flows both ways.
    other.send(ctl(Msg.SIGNAL, ("id", 2), ("signal", 15)))
    assert mon.guest_msg() == (Msg.SIGNAL, {"id": "2", "signal": "15"})
    mon.ctl.sendall(exited(2, 143))
    assert other.msg() == (Msg.EXIT, {"id": "2", "status": "143"})
    # Once the lazy owner goes, the guest's output flows again (into the log only).
    lazy.close()
    writer.join(TIMEOUT)
    assert frames == 400
    assert mon.alive()


def test_output_after_main_exit_still_reaches_the_log(mon: Monitor) -> None:
    a = mon.client()
    mon.start(a, 1, main=True)
    a.close()  # `run -d`: nobody is connected when the container ends
    mon.ctl.sendall(exited(1, 0))
    time.sleep(0.5)  # its output's tail is still on the other socket
    assert mon.alive()
    mon.io.sendall(out(1, b"tail\n") + eofs(1))
    assert at_eof(mon.ctl, 3)
    records = parse_log((mon.dir / "container.log").read_bytes())
    assert records == [("stdout", b"tail\n")]
    assert mon.exit_file() == "0\n\n"


def test_python_guest_session_runs_through_the_monitor(
        mon: Monitor, capfd: pytest.CaptureFixture[str]) -> None:
    """The host's own GuestSession, unchanged, on the two fds the monitor hands out."""
    def guest() -> None:
        assert mon.guest_msg()[0] == Msg.CONTAINER
        mon.ctl.sendall(ctl(Msg.OK))
        assert mon.guest_msg()[0] == Msg.EXEC
        mon.ctl.sendall(started(1))
        mon.io.sendall(out(1, b"hello\n") + eofs(1))
        mon.ctl.sendall(exited(1, 42))

    thread = threading.Thread(target=guest, daemon=True)
    thread.start()
    client = mon.client()
    for s in (client.ctl, client.io):
        s.settimeout(None)
    session = GuestSession(client.ctl, client.io)
    session.setup_container("box", TIMEOUT, lambda: True)
    session.start(1, ProcessSpec(args=("true",)), None, main=True, alive=lambda: True)
    assert session.pump(1, tty=False, stdin_fd=None) == 42
    assert capfd.readouterr().out == "hello\n"
    thread.join(TIMEOUT)
    assert mon.exit_file() == "42\n\n"


def test_a_client_breaking_the_framing_is_dropped_alone(mon: Monitor) -> None:
    good = mon.client()
    mon.start(good, 1, main=True)
    for bad in (HEADER.pack(Msg.SIGNAL, (1 << 20) + 1), frame(Msg.SIGNAL, b"id=1")):
        c = mon.client()
        c.send(bad)
        assert at_eof(c.ctl)
    c = mon.client()
    c.io.sendall(HEADER.pack(stream_id(1, Stream.STDIN), (1 << 16) + 1))
    assert at_eof(c.ctl)
    c = mon.client()
    c.send(ctl(99, ("x", 1)))  # unknown requests are ignored
    c.send(ctl(PS))
    assert c.msg() == (Msg.OK, {"proc": "1"})
    good.io.sendall(frame(stream_id(1, Stream.STDIN), b"in"))
    assert read_frame(mon.io) == (stream_id(1, Stream.STDIN), b"in")
    mon.io.sendall(out(1, b"ok\n"))
    assert read_frame(good.io) == (stream_id(1, Stream.STDOUT), b"ok\n")


def test_at_most_64_clients(mon: Monitor) -> None:
    clients = [mon.client() for _ in range(64)]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(TIMEOUT)
    conn.connect(str(mon.sock))
    msg, fds, _, _ = socket.recv_fds(conn, 1, 2)
    assert (msg, fds) == (b"", [])
    conn.close()
    clients.pop().close()
    time.sleep(0.1)
    again = mon.client()
    again.send(ctl(PS))
    assert again.msg() == (Msg.OK, {})
