"""Long-running containers with real VMs: run -d, exec, attach, logs, stop, start, kill, rm."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import until as _until

pytestmark = pytest.mark.vm


def _ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def _inspect(vm, ref: str) -> dict:
    [doc] = json.loads(_ok(vm.hyperrun("inspect", ref)))
    return doc


@contextlib.contextmanager
def detached(vm, *args: str, name: str) -> Iterator[str]:
    """A `run -d` container, removed (with its VM) however the test ends."""
    out = vm.hyperrun("run", "-d", "--name", name, "--memory", "128m", *args)
    try:
        assert out.returncode == 0, out.stderr.decode()
        cid = out.stdout.decode()
        assert re.fullmatch(r"[0-9a-f]{64}\n", cid), cid  # the full ID, as docker prints
        yield cid.strip()
    finally:
        vm.hyperrun("rm", "-f", name)


def _logs(vm, ref: str, *flags: str) -> str:
    return _ok(vm.hyperrun("logs", *flags, ref))


SERVICE = ("trap 'echo got TERM; exit 7' TERM; echo up; echo warming >&2; "
           "while :; do sleep 0.2; done")


def test_a_detached_container_from_run_to_rm(vm) -> None:
    with detached(vm, "busybox", "sh", "-c", SERVICE, name="svc") as cid:
        assert _until(lambda: "up\n" in _logs(vm, "svc"))
        [row] = [json.loads(line) for line in _ok(vm.hyperrun("ps", "--format", "json"))
                 .splitlines() if json.loads(line)["Names"] == "svc"]
        assert row["State"] == "running" and row["Status"].startswith("Up ")
        logs = vm.hyperrun("logs", "svc")
        assert (logs.stdout, logs.stderr) == (b"up\n", b"warming\n")  # streams kept apart

        # exec: its own streams and status; docker's 126 and 127.
        out = vm.hyperrun("exec", "svc", "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (out.returncode, out.stdout, out.stderr) == (3, b"out\n", b"err\n")
        assert vm.hyperrun("exec", "svc", "no-such-command").returncode == 127
        assert vm.hyperrun("exec", "svc", "/etc/passwd").returncode == 126
        out = vm.hyperrun("exec", "-e", "FOO=bar", "-w", "/tmp", "-u", "1000", "svc",
                          "sh", "-c", "echo $FOO $(pwd) $(id -u)")
        assert _ok(out) == "bar /tmp 1000\n"
        # The entrypoint is PID 1 of the container; the agent is nowhere to be seen.
        ps = _ok(vm.hyperrun("exec", "svc", "ps"))
        [first] = [line for line in ps.splitlines() if line.split()[0] == "1"]
        assert "trap" in first and "agent" not in ps and "init" not in ps

        # logs -f sees a line the main process writes later (through its own stdout).
        follower = subprocess.Popen([sys.executable, "-m", "hyperrun", "logs", "-f", "svc"],
                                    env=vm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _ok(vm.hyperrun("exec", "svc", "sh", "-c", "echo later > /proc/1/fd/1"))
            seen = b""
            deadline = time.monotonic() + 30
            while b"later\n" not in seen and time.monotonic() < deadline:
                if select.select([follower.stdout], [], [], 1)[0]:
                    seen += os.read(follower.stdout.fileno(), 4096)
            assert seen == b"up\nlater\n"
        finally:
            follower.kill()
            follower.wait()

        # stop: SIGTERM reaches PID 1's handler; start: same container, same layer.
        _ok(vm.hyperrun("exec", "svc", "sh", "-c", "echo kept > /kept"))
        assert _ok(vm.hyperrun("stop", "svc")) == "svc\n"
        doc = _inspect(vm, "svc")
        assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 7
        assert doc["State"]["Error"] == ""
        assert "got TERM\n" in _logs(vm, "svc")
        assert vm.hyperrun("exec", "svc", "true").returncode == 125  # not running
        assert _ok(vm.hyperrun("start", "svc")) == "svc\n"
        doc = _inspect(vm, "svc")
        assert doc["Id"] == cid and doc["State"]["Running"] is True
        assert _ok(vm.hyperrun("exec", "svc", "cat", "/kept")) == "kept\n"
        assert _until(lambda: _logs(vm, "svc").count("up\n") == 2)  # the log goes on

        assert _ok(vm.hyperrun("rm", "-f", "svc")) == "svc\n"
        assert not (vm.root / "containers" / cid).exists()
        assert not list((vm.root / "sock").glob(cid[:12] + ".*"))


def test_stop_kills_what_ignores_sigterm_and_kill_sends_signals(vm) -> None:
    script = "trap '' TERM; trap 'echo got USR1' USR1; echo ready; while :; do sleep 0.2; done"
    with detached(vm, "busybox", "sh", "-c", script, name="stubborn"):
        assert _until(lambda: "ready\n" in _logs(vm, "stubborn"))
        assert _ok(vm.hyperrun("kill", "-s", "USR1", "stubborn")) == "stubborn\n"
        assert _until(lambda: "got USR1\n" in _logs(vm, "stubborn"))
        started = time.monotonic()
        assert _ok(vm.hyperrun("stop", "-t", "1", "stubborn")) == "stubborn\n"
        took = time.monotonic() - started
        doc = _inspect(vm, "stubborn")
        assert (doc["State"]["Status"], doc["State"]["ExitCode"]) == ("exited", 137)
        assert took < 30, took  # killed after its grace, not waited on forever
        out = vm.hyperrun("kill", "stubborn")
        assert out.returncode == 125 and b"is not running" in out.stderr


def test_qemu_killed_is_an_exited_container_with_an_error(vm) -> None:
    with detached(vm, "busybox", "sleep", "600", name="victim") as cid:
        pid = _until(lambda: _inspect(vm, "victim")["State"]["Pid"])
        assert pid > 0 and b"qemu" in Path(f"/proc/{pid}/cmdline").read_bytes()
        os.kill(pid, signal.SIGKILL)
        state = _until(lambda: (s := _inspect(vm, "victim")["State"])["Status"] == "exited"
                       and s)
        assert state["ExitCode"] == 137 and "VM ended" in state["Error"]
        ps = vm.hyperrun("ps", "-a", "--filter", "name=victim")
        assert "Exited (137)" in _ok(ps)
        assert _ok(vm.hyperrun("rm", "victim")) == "victim\n"
        assert not (vm.root / "containers" / cid).exists()
        assert not list((vm.root / "sock").glob(cid[:12] + ".*"))


def test_attach_feeds_stdin_and_returns_the_exit_status(vm) -> None:
    script = "echo waiting; read x; echo got $x; exit 4"
    with detached(vm, "-i", "busybox", "sh", "-c", script, name="att"):
        assert _until(lambda: "waiting\n" in _logs(vm, "att"))
        out = vm.hyperrun("attach", "att", input=b"hello\n")
        assert (out.returncode, out.stdout) == (4, b"got hello\n"), out.stderr
        assert _inspect(vm, "att")["State"]["ExitCode"] == 4


def _pty_exec(vm, ref: str, *cmd: str) -> tuple[subprocess.Popen[bytes], int]:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "exec", "-it", ref, *cmd],
                            env=vm.env, stdin=secondary, stdout=secondary,
                            stderr=subprocess.PIPE)
    os.close(secondary)
    return proc, primary


def _read_until(fd: int, want: bytes, timeout: float = 60) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while want not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen


def test_two_exec_sessions_at_once_each_with_its_own_terminal(vm) -> None:
    with detached(vm, "busybox", "sleep", "600", name="lc-shared"):
        sessions = [_pty_exec(vm, "lc-shared", "sh", "-c",
                              "tty; echo ready; read x; echo got-$x; exit 9")
                    for _ in range(2)]
        try:
            ttys = []
            for _, primary in sessions:
                seen = _read_until(primary, b"ready")
                found = re.search(rb"/dev/pts/\d+", seen)
                assert found, seen
                ttys.append(found[0])
            assert ttys[0] != ttys[1]
            for word, (_, primary) in zip((b"one", b"two"), sessions, strict=True):
                os.write(primary, word + b"\n")
            for word, (proc, primary) in zip((b"one", b"two"), sessions, strict=True):
                assert b"got-" + word in _read_until(primary, b"got-" + word)
                assert proc.wait(timeout=60) == 9
        finally:
            for proc, primary in sessions:
                proc.kill()
                proc.wait()
                os.close(primary)


def test_ten_containers_started_at_once_all_run(vm) -> None:
    def start(_: int) -> subprocess.CompletedProcess[bytes]:
        return vm.hyperrun("run", "-d", "--memory", "128m", "busybox", "sleep", "600")

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(start, range(10)))
    ids = [r.stdout.decode().strip() for r in results if r.returncode == 0]
    try:
        assert len(ids) == 10, [r.stderr.decode() for r in results if r.returncode]
        rows = [json.loads(line) for line in _ok(vm.hyperrun("ps", "--format", "json"))
                .splitlines()]
        mine = [r for r in rows if any(i.startswith(r["ID"]) for i in ids)]
        assert len(mine) == 10 and all(r["State"] == "running" for r in mine)
        assert len({r["Names"] for r in mine}) == 10
        assert _ok(vm.hyperrun("exec", ids[-1], "echo", "hi")) == "hi\n"
    finally:
        if ids:
            vm.hyperrun("rm", "-f", *ids)


def test_a_flood_of_output_keeps_only_the_configured_log(vm) -> None:
    size = 100_000_000  # through a 1 MiB x 2 log
    with detached(vm, "--log-opt", "max-size=1m", "--log-opt", "max-file=2", "busybox",
                  "sh", "-c", f"head -c {size} /dev/zero; echo; echo the end",
                  name="flood") as cid:
        assert _ok(vm.hyperrun("wait", "flood"), ) == "0\n"
        kept = sorted((vm.root / "containers" / cid).glob("container.log*"))
        assert [p.name for p in kept] == ["container.log", "container.log.1"]
        assert sum(p.stat().st_size for p in kept) <= 2 * (1 << 20) + (64 << 10) + 64
        assert _logs(vm, "flood", "--tail", "1") == "the end\n"


def test_restart_policies_start_it_again_until_stopped_by_hand(vm) -> None:
    with detached(vm, "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 3",
                  name="lc-failing"):
        def settled():
            doc = _inspect(vm, "lc-failing")
            return doc["RestartCount"] == 2 and doc["State"]["Status"] == "exited" and doc
        doc = _until(settled, timeout=120, step=0.5)
        assert doc and doc["State"]["ExitCode"] == 3, _inspect(vm, "lc-failing")
        assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                      "MaximumRetryCount": 2}
        assert _logs(vm, "lc-failing") == "run\n" * 3  # the first run and two restarts
    with detached(vm, "--restart", "always", "busybox", "sh", "-c", "echo up; sleep 1",
                  name="lc-always"):
        assert _until(lambda: _inspect(vm, "lc-always")["RestartCount"] >= 1, timeout=120)
        assert _ok(vm.hyperrun("stop", "lc-always")) == "lc-always\n"
        count = _inspect(vm, "lc-always")["RestartCount"]
        time.sleep(5)  # long enough for a restart to have happened, were one due
        doc = _inspect(vm, "lc-always")
        assert (doc["State"]["Status"], doc["RestartCount"]) == ("exited", count)


def test_concurrent_commands_on_one_container_take_turns(vm) -> None:
    with detached(vm, "busybox", "sleep", "600", name="lc-busy"):
        # Two stops at once while an exec runs: one stops the container, the other finds it
        # stopped, both succeed; the exec ends with an error saying why.
        long_exec = subprocess.Popen([sys.executable, "-m", "hyperrun", "exec", "lc-busy",
                                      "sh", "-c", "echo started; sleep 600"],
                                     env=vm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert long_exec.stdout.readline() == b"started\n"
        stops = [subprocess.Popen([sys.executable, "-m", "hyperrun", "stop", "-t", "1",
                                   "lc-busy"], env=vm.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for _ in range(2)]
        for stop in stops:
            out, err = stop.communicate(timeout=120)
            assert (stop.returncode, out) == (0, b"lc-busy\n"), err
        # Its container went away under it: either the agent killed it with the main
        # process and reported that (137, as docker's exec), or the VM went first.
        status = long_exec.wait(timeout=60)
        assert status == 137 or (status != 0 and b"stopped while the command ran"
                                 in long_exec.stderr.read())
        assert _inspect(vm, "lc-busy")["State"]["Status"] == "exited"
        # rm -f while an exec runs: the rm succeeds, the exec ends with an error.
        assert _ok(vm.hyperrun("start", "lc-busy")) == "lc-busy\n"
        runner = subprocess.Popen([sys.executable, "-m", "hyperrun", "exec", "lc-busy",
                                   "sh", "-c", "echo started; sleep 600"],
                                  env=vm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert runner.stdout.readline() == b"started\n"
        assert _ok(vm.hyperrun("rm", "-f", "lc-busy")) == "lc-busy\n"
        assert runner.wait(timeout=60) != 0
        assert vm.hyperrun("inspect", "lc-busy").returncode == 1
