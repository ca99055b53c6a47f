"""The host against a hostile guest: crafted frames over socket pairs, no VM.

Each test plays the guest's end of both channels (tests/fake_guest.py) and drives the
real GuestSession, then checks what the user would see: exception type, exit status and
the printed line. docs/protocol.md "The host trusts no frame" states the rules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from conftest import monitor_binary
from fake_guest import (
    FakeGuest,
    GuestEnd,
    ListeningGuest,
    Script,
    ctl,
    eofs,
    exited,
    out,
    records,
    started,
)

from hyperrun import cli, log
from hyperrun.errors import BootFailed, ContainerError, GuestGone, HyperrunError, ProtocolError
from hyperrun.spec import ProcessSpec
from hyperrun.vm import pump as pump_mod
from hyperrun.vm import session as session_mod
from hyperrun.vm.protocol import (
    CTL_MAX,
    KEY_MAX,
    RECORDS_MAX,
    VALUE_MAX,
    FrameReader,
    Message,
    Msg,
    Stream,
    frame,
    split_stream_id,
)

SPEC = ProcessSpec(args=("true",))
Step = tuple[str, bytes]  # ("ctl" | "io", bytes the guest sends)


def alive() -> bool:
    return True


@pytest.fixture
def guest() -> Iterator[FakeGuest]:
    g = FakeGuest()
    yield g
    g.close()


def after(expected: Msg, *steps: Step) -> Script:
    """A guest script: wait for the host's `expected` message, then send the steps."""
    def script(g: GuestEnd) -> None:
        kind, _ = g.read_frame()
        assert kind == expected
        for channel, data in steps:
            (g.ctl if channel == "ctl" else g.io).sendall(data)
    return script


def run_main(g: FakeGuest, *steps: Step) -> int:
    """Play `steps` after EXEC; start process 1 and pump it, as `hyperrun run` does."""
    g.play(after(Msg.EXEC, *steps))
    g.session.start(1, SPEC, None, main=True, alive=alive)
    return g.session.pump(1, tty=False, stdin_fd=None)


def user_sees(exc: HyperrunError, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    log.error(exc.message, exc.hint, exc.details)
    return capsys.readouterr().err


# -- 1. exit statuses outside 0..255 --------------------------------------------------------

BAD_STATUSES = ["256", "1000", "-1", "abc", "", " 7", "+7", "1_0", "\u0663",
                "99999999999999999999", "0x10"]


@pytest.mark.parametrize("status", BAD_STATUSES,
                         ids=lambda v: ascii(v)[1:-1].replace(" ", "_") or "empty")
def test_exit_status_outside_0_255_is_a_violation(guest: FakeGuest, status: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ProtocolError) as info:
        run_main(guest, ("ctl", started()), ("io", eofs(1)), ("ctl", exited(1, status)))
    assert info.value.status == 125
    line = user_sees(info.value, capsys)
    assert line.count("\n") == 1 and "EXIT" in line and "hint:" in line


@pytest.mark.parametrize("status", [0, 1, 137, 255])
def test_exit_status_in_range_is_the_result(guest: FakeGuest, status: int) -> None:
    assert run_main(guest, ("ctl", started()), ("io", eofs(1)),
                    ("ctl", exited(1, status))) == status


# -- 2. ERROR for the main process never means success ----------------------------------------

@pytest.mark.parametrize("status", [0, 1, 124, 128, 255, 256])
def test_error_status_other_than_125_to_127_is_a_violation(guest: FakeGuest,
                                                           status: int) -> None:
    error = ctl(Msg.ERROR, ("id", 1), ("status", status), ("message", "all fine"))
    with pytest.raises(ProtocolError, match="ERROR with status") as info:
        run_main(guest, ("ctl", error))
    assert info.value.status == 125


@pytest.mark.parametrize("status", [125, 126, 127])
def test_error_status_125_to_127_is_reported(guest: FakeGuest, status: int) -> None:
    error = ctl(Msg.ERROR, ("id", 1), ("status", status), ("message", "nope"))
    with pytest.raises(ContainerError, match="nope") as info:
        run_main(guest, ("ctl", error))
    assert info.value.status == status


def test_error_without_status_or_id_is_125(guest: FakeGuest) -> None:
    with pytest.raises(ContainerError) as info:
        run_main(guest, ("ctl", ctl(Msg.ERROR, ("message", "EXEC without a valid id"))))
    assert info.value.status == 125


# -- 3. malformed fields are ProtocolErrors, long ones are cut --------------------------------

@pytest.mark.parametrize("reply", [
    ctl(Msg.STARTED, ("id", "abc")),
    ctl(Msg.STARTED, ("id", "99999999999999999999")),
    ctl(Msg.ERROR, ("id", 1), ("status", "99999999999999999999")),
    ctl(Msg.ERROR, ("id", "-1"), ("status", 127)),
    frame(Msg.STARTED, b"id=1"),  # not NUL-terminated
    frame(Msg.STARTED, b"id\0"),  # no '='
    frame(Msg.ERROR, b"a=\0" * (RECORDS_MAX + 1)),
    frame(Msg.ERROR, b"k" * (KEY_MAX + 1) + b"=v\0"),
], ids=["id-abc", "id-huge", "status-huge", "id-negative", "unterminated", "no-equals",
        "too-many-records", "long-key"])
def test_malformed_reply_is_a_protocol_error(guest: FakeGuest, reply: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        run_main(guest, ("ctl", reply))
    assert info.value.status == 125


def test_long_error_message_is_cut(guest: FakeGuest, capsys: pytest.CaptureFixture[str]) -> None:
    huge = b"x" * (900 << 10)
    with pytest.raises(ContainerError) as info:
        run_main(guest, ("ctl", ctl(Msg.ERROR, ("id", 1), ("status", 127), ("message", huge))))
    assert len(info.value.message) <= VALUE_MAX
    assert len(user_sees(info.value, capsys)) < 1100


def test_number_is_strict() -> None:
    m = Message.make(Msg.EXIT, ("id", "007"), ("status", "\u0663"), ("big", 10**10))
    assert m.number("id") == 7
    assert m.number("absent", 5) == 5
    for key in ("status", "big", "absent"):
        with pytest.raises(ProtocolError):
            m.number(key)


def test_decode_keeps_values_short() -> None:
    m = Message.decode(Msg.ERROR, records(("message", b"\xff" + b"y" * CTL_MAX), ("id", 1)))
    assert len(m.get("message") or "") == VALUE_MAX and m.number("id") == 1
    assert Message.decode(Msg.OK, b"").fields == ()
    assert Message.decode(Msg.EXIT, b"a==b\0").get("a") == "=b"  # split at the first '='
    with pytest.raises(ProtocolError, match="unknown message type"):
        Message.decode(999, b"")


def test_stream_kind_3_does_not_exist() -> None:
    assert split_stream_id(6) == (1, Stream.STDERR)
    with pytest.raises(ProtocolError):
        split_stream_id(7)


# -- 4. floods cost bounded memory -------------------------------------------------------------

def test_flood_of_unexpected_replies_while_booting(guest: FakeGuest) -> None:
    guest.play(after(Msg.CONTAINER, ("ctl", started(2) * 100_000)))
    with pytest.raises(ProtocolError, match="unexpected control messages"):
        guest.session.setup_container("h", 10, alive)
    assert guest.session._pending == []


def test_flood_of_unknown_types_while_booting(guest: FakeGuest) -> None:
    guest.play(after(Msg.CONTAINER, ("ctl", frame(999, b"x" * 100) * 100_000)))
    with pytest.raises(ProtocolError, match="type 999"):
        guest.session.setup_container("h", 10, alive)


def test_a_few_unexpected_messages_are_tolerated(guest: FakeGuest) -> None:
    junk = frame(999, b"") + ctl(Msg.EXIT, ("id", 3), ("status", 0)) + frame(Msg.EXEC, b"")
    guest.play(after(Msg.CONTAINER, ("ctl", junk * 5 + frame(Msg.OK, b""))))
    guest.session.setup_container("h", 10, alive)


def test_flood_of_exits_while_pumping(guest: FakeGuest) -> None:
    with pytest.raises(ProtocolError, match="unexpected"):
        run_main(guest, ("ctl", started()), ("ctl", exited(9) * 10_000))


def test_repeated_exit_is_unexpected(guest: FakeGuest) -> None:
    # The first EXIT comes in the same read as STARTED and must reach the pump.
    with pytest.raises(ProtocolError, match="unexpected"):
        run_main(guest, ("ctl", started() + exited(1, 3) * 1000), ("io", eofs(1)))


def test_output_for_unknown_streams_is_dropped(guest: FakeGuest,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    junk = out(9, b"j" * 65536) + out(1, b"stdin?", Stream.STDIN) + frame(7, b"kind 3")
    status = run_main(guest, ("ctl", started()), ("io", junk * 128),  # 8 MiB of junk
                      ("io", out(1, b"hello\n") + eofs(1) + out(1, b"after eof\n")),
                      ("ctl", exited(1, 0)))
    assert status == 0
    assert capfd.readouterr().out == "hello\n"
    assert len(guest.session.io_reader._buf) < 1 << 16


def test_frame_reader_refuses_oversized_frames() -> None:
    reader = FrameReader(1024)
    assert list(reader.feed(frame(1, b"x" * 1024)[:-1])) == []  # waits for the last byte
    with pytest.raises(ProtocolError):
        list(FrameReader(1024).feed(frame(1, b"x" * 1025)))


def test_host_memory_under_a_flood() -> None:
    """Peak RSS while a guest floods 32 MiB of unexpected replies (tests/guest_flood.py)."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "tests/guest_flood.py"), "32"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["outcome"].startswith("ProtocolError"), result
    assert result["growth_mib"] < 16, result


# -- 5. guest text reaches the terminal escaped -----------------------------------------------

HOSTILE = "\x1b[2J\x1b]0;pwned\x07\rhyperrun: all good\nsecond line\u009b31m"


def _assert_escaped(err: str) -> None:
    assert err.count("\n") == 1 and err.startswith("hyperrun: "), err
    for raw in ("\x1b", "\r", "\x07", "\u009b"):
        assert raw not in err
    assert "\\x1b" in err


def _cli_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, guest: FakeGuest,
             *steps: Step) -> int:
    """`hyperrun run` through cli.main, with the VM replaced by the fake guest."""
    def fake_run(*_args: object, **_kw: object) -> int:
        return run_main(guest, *steps)

    monkeypatch.setenv("HYPERRUN_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("HYPERRUN_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setattr("hyperrun.containers.run.run", fake_run)
    return cli.main(["run", "--rm", "--pull", "never", "busybox", "true"])


def test_cli_error_message_is_one_escaped_line(guest: FakeGuest, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    error = ctl(Msg.ERROR, ("id", 1), ("status", 127), ("message", HOSTILE))
    assert _cli_run(monkeypatch, tmp_path, guest, ("ctl", error)) == 127
    _assert_escaped(capsys.readouterr().err)


def test_cli_protocol_error_is_125_and_one_line(guest: FakeGuest, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    steps = [("ctl", started()), ("io", eofs(1)), ("ctl", exited(1, "256"))]
    assert _cli_run(monkeypatch, tmp_path, guest, *steps) == 125
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broke the protocol" in err and "status=256" in err


def test_cli_hostile_text_in_a_protocol_error(guest: FakeGuest, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = ctl(Msg.STARTED, ("id", HOSTILE))
    assert _cli_run(monkeypatch, tmp_path, guest, ("ctl", bad)) == 125
    _assert_escaped(capsys.readouterr().err)


def test_boot_failure_console_tail_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    tail = "booting\n" + HOSTILE + "\n" + "z" * 50_000
    exc = BootFailed("the VM failed to boot: the guest agent stopped", tail)
    err = user_sees(exc, capsys)
    for raw in ("\x1b", "\r", "\x07", "\u009b"):
        assert raw not in err
    # One line per console line (the first is the message), each cut to a printable length.
    lines = err.splitlines()
    assert len(lines) == 1 + tail.count("\n") + 1
    assert max(map(len, lines)) < 2100


def test_console_tail_reads_only_the_end(tmp_path: Path) -> None:
    from hyperrun.containers.boot import CONSOLE_TAIL_LINES, console_tail

    log_file = tmp_path / "console.log"
    with log_file.open("wb") as f:
        f.write(b"x" * (64 << 20))  # a guest can fill its console without newlines
        f.write(b"\n" + b"".join(b"line %d\n" % i for i in range(100)))
    tracemalloc.start()
    try:
        tail = console_tail(log_file)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert tail.splitlines()[-1] == "line 99"
    assert len(tail.splitlines()) == CONSOLE_TAIL_LINES
    assert len(tail) < 1 << 16


# -- 6. silence, wrong ids and odd orders end within the timeouts -----------------------------

def test_guest_never_answers_container(guest: FakeGuest) -> None:
    guest.play(after(Msg.CONTAINER))
    begun = time.monotonic()
    with pytest.raises(TimeoutError):  # run.py reports it as BootFailed
        guest.session.setup_container("h", 0.5, alive)
    assert time.monotonic() - begun < 5


def test_vm_dies_before_answering(guest: FakeGuest) -> None:
    guest.play(after(Msg.CONTAINER))
    with pytest.raises(GuestGone):
        guest.session.setup_container("h", 30, lambda: False)


@pytest.mark.parametrize("reply", [b"", started(2), ctl(Msg.ERROR, ("id", 2), ("status", 127))],
                         ids=["silence", "started-other-id", "error-other-id"])
def test_no_answer_for_our_id_times_out(guest: FakeGuest, reply: bytes,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_mod, "START_TIMEOUT", 0.5)
    with pytest.raises(GuestGone, match="did not answer EXEC"):
        run_main(guest, ("ctl", reply))


def test_guest_that_does_not_read(guest: FakeGuest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_mod, "SEND_TIMEOUT", 0.3)
    big = ProcessSpec(args=("true",), env=tuple(f"V{i}={'v' * 1000}" for i in range(4000)))
    with pytest.raises(GuestGone, match="stopped reading"):
        guest.session.start(1, big, None, main=True, alive=alive)


def test_exit_of_a_process_never_started(guest: FakeGuest) -> None:
    status = run_main(guest, ("ctl", exited(5, 1) + exited(1, 9) + started()),
                      ("io", eofs(1)), ("ctl", exited(1, 3)))
    assert status == 3


def test_exit_before_output_ends(guest: FakeGuest, capfd: pytest.CaptureFixture[str]) -> None:
    status = run_main(guest, ("ctl", started() + exited(1, 4)),
                      ("io", out(1, b"late\n") + out(1, b"err\n", Stream.STDERR) + eofs(1)))
    assert status == 4
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("late\n", "err\n")


def test_eof_never_comes(guest: FakeGuest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pump_mod, "EOF_GRACE", 0.3)
    with pytest.raises(ProtocolError, match="never ended"):
        run_main(guest, ("ctl", started() + exited(1, 0)), ("io", out(1, b"", Stream.STDOUT)))


def test_eofs_twice_and_before_exit(guest: FakeGuest) -> None:
    assert run_main(guest, ("ctl", started()), ("io", eofs(1) * 3),
                    ("ctl", exited(1, 0))) == 0


@pytest.mark.parametrize("channel", ["ctl", "io"])
def test_guest_hangs_up_while_pumping(guest: FakeGuest, channel: str) -> None:
    def script(g: GuestEnd) -> None:
        after(Msg.EXEC, ("ctl", started()))(g)
        (g.ctl if channel == "ctl" else g.io).close()

    guest.play(script)
    guest.session.start(1, SPEC, None, main=True, alive=alive)
    with pytest.raises(GuestGone):
        guest.session.pump(1, tty=False, stdin_fd=None)


# -- through containers/run.py's _boot_and_run, libvirt replaced by a fake -------------------

class FakeDomain:
    def __init__(self) -> None:
        self.destroyed = False

    def isActive(self) -> bool:  # noqa: N802 - libvirt's name
        return not self.destroyed

    def state(self) -> list[int]:  # never paused (`hyperrun pause`)
        return [libvirt.VIR_DOMAIN_SHUTOFF if self.destroyed else libvirt.VIR_DOMAIN_RUNNING, 0]

    def destroy(self) -> None:
        self.destroyed = True


class FakeConnection:
    def __init__(self) -> None:
        self.domain = FakeDomain()

    def createXML(self, _xml: str, _flags: int) -> FakeDomain:  # noqa: N802 - libvirt's name
        return self.domain


def boot_and_run(tmp_path: Path, *steps: Step) -> tuple[FakeConnection, Exception]:
    """_boot_and_run, through a real monitor, against a guest playing CONTAINER -> OK,
    then `steps` after EXEC."""
    from hyperrun.containers import names
    from hyperrun.containers import records as state
    from hyperrun.containers.run import _boot_and_run, _Cleanup
    from hyperrun.store import Store

    store = Store(Path(tempfile.mkdtemp(dir="/tmp", prefix="hr-")))  # sun_path is short
    try:
        store.ensure()
        shutil.copy(monitor_binary(), store.boot / "hyperrun-monitor")
        settings = state.Settings(accel="tcg", cpus=1, memory_mib=64, hostname="h",
                                  kernel=str(tmp_path / "k"), initrd=str(tmp_path / "i"),
                                  base_disk=str(tmp_path / "b"))
        c = state.create(store, names.new_id(), None, "busybox", "sha256:" + "0" * 64,
                         ("true",), remove=False, settings=settings)
        files = state.paths(store, c.id)
        files.console_log.write_text("[ 0.1] booting\n" + HOSTILE + "\n")
        listening = ListeningGuest(files.ctl_socket, files.io_socket)

        def script(g: GuestEnd) -> None:
            after(Msg.CONTAINER, ("ctl", frame(Msg.OK, b"")))(g)
            after(Msg.EXEC, *steps)(g)

        listening.play(script)
        conn = FakeConnection()
        job = _Cleanup(store, "test:///default", remove=False, detach=False)
        try:
            with pytest.raises(HyperrunError) as info:
                _boot_and_run(conn, store, c, SPEC, None, job,  # type: ignore[arg-type]
                              detach=False)
        finally:
            listening.close()
        return conn, info.value
    finally:
        shutil.rmtree(store.root, ignore_errors=True)


def test_protocol_violation_stops_the_vm(tmp_path: Path) -> None:
    conn, exc = boot_and_run(tmp_path, ("ctl", started()), ("io", eofs(1)),
                             ("ctl", exited(1, 256)))
    assert isinstance(exc, ProtocolError) and exc.status == 125
    assert conn.domain.destroyed


def test_silent_agent_is_a_boot_failure_with_an_escaped_console(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_mod, "START_TIMEOUT", 0.5)
    conn, exc = boot_and_run(tmp_path)  # OK, then nothing after EXEC
    assert isinstance(exc, BootFailed) and "did not answer EXEC" in exc.message
    assert conn.domain.destroyed
    err = user_sees(exc, capsys)
    assert "\x1b" not in err and "\r" not in err and "booting" in err
