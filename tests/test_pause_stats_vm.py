"""pause, unpause, stats and wait on a container that really runs: one VM boot for all."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.vm

# Busy until told to stop, so that CPU % has something to show; then exits 3.
SCRIPT = "echo started; while :; do :; done & read x; kill $!; echo done; exit 3"


def _ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def _stats(vm, name: str) -> dict[str, str]:
    [row] = [json.loads(line) for line in
             _ok(vm.hyperrun("stats", "--no-stream", "--format", "json")).splitlines()]
    assert row["Name"] == name and row["Container"] == row["ID"]
    return row


def _percent(text: str) -> float:
    assert re.fullmatch(r"\d+\.\d\d%", text), text
    return float(text[:-1])


def test_pause_stats_unpause_and_wait_on_a_running_container(vm) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "run", "-i", "--name", "busy",
                             "--cpus", "1", "--memory", "160m", "busybox", "sh", "-c", SCRIPT],
                            env=vm.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    waiter = None
    try:
        assert proc.stdout.readline() == b"started\n", proc.stderr.read1().decode()
        busy = _stats(vm, "busy")
        assert _percent(busy["CPUPerc"]) > 10  # one guest vCPU spinning costs a host core
        used, limit = busy["MemUsage"].split(" / ")
        assert limit == "160MiB" and re.fullmatch(r"[\d.]+(MiB|GiB)", used), used
        assert busy["NetIO"] == "0B / 0B" and busy["PIDs"] == "--"
        read, _ = busy["BlockIO"].split(" / ")  # it booted from its disk: something was read
        assert re.fullmatch(r"[\d.]+[kMG]B", read), busy["BlockIO"]

        out = vm.hyperrun("unpause", "busy")
        assert out.returncode == 125 and "Container busy is not paused" in out.stderr.decode()
        assert _ok(vm.hyperrun("pause", "busy")) == "busy\n"
        out = vm.hyperrun("pause", "busy")
        assert out.returncode == 125 and "Container busy is already paused" in out.stderr.decode()
        [row] = [json.loads(line) for line in
                 _ok(vm.hyperrun("ps", "--format", "json")).splitlines()]
        assert row["State"] == "paused" and re.fullmatch(r"Up .+ \(Paused\)", row["Status"])
        [doc] = json.loads(_ok(vm.hyperrun("inspect", "busy")))
        assert doc["State"]["Status"] == "paused" and doc["State"]["Paused"] is True
        assert doc["State"]["Running"] is True and doc["State"]["Pid"] > 0
        assert "  Paused: 1" in _ok(vm.hyperrun("info")).splitlines()
        paused = _stats(vm, "busy")
        assert _percent(paused["CPUPerc"]) < 5  # its vCPU is stopped
        table = _ok(vm.hyperrun("stats", "--no-stream")).splitlines()
        assert table[0].startswith("CONTAINER ID   NAME") and len(table) == 2
        assert table[1].split()[:2] == [row["ID"], "busy"]

        # `wait` from another terminal, started before the container ends.
        waiter = subprocess.Popen([sys.executable, "-m", "hyperrun", "wait", "busy"],
                                  env=vm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Told to finish while paused, the guest cannot: its `run` just waits.
        proc.stdin.write(b"\n")
        proc.stdin.close()
        time.sleep(3)
        assert proc.poll() is None and waiter.poll() is None
        assert _ok(vm.hyperrun("unpause", "busy")) == "busy\n"
        assert proc.wait(timeout=120) == 3, proc.stderr.read().decode()
        assert proc.stdout.read() == b"done\n"
        out, err = waiter.communicate(timeout=60)
        assert (waiter.returncode, out, err) == (0, b"3\n", b"")
    finally:
        for p in (proc, waiter):
            if p is not None:
                p.kill()
                p.wait()
    assert _ok(vm.hyperrun("wait", "busy")) == "3\n"
    out = vm.hyperrun("pause", "busy")
    assert out.returncode == 125 and "Container busy is not running" in out.stderr.decode()
    assert vm.hyperrun("rm", "busy").returncode == 0
