"""Killed commands and leftovers: the next command reconciles, `system prune` cleans up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import libvirt
import pytest

pytestmark = pytest.mark.vm


def _ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def _domains_of(cid: str) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return [d.name() for d in conn.listAllDomains() if d.name().endswith(cid[:12])]
    finally:
        conn.close()


def _monitors_of(cid: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"hyperrun-monitor") and any(
                    a.endswith(cid[:12].encode() + b".mon") for a in argv):
                found.append(int(entry))
    return found


def _until(what, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (got := what()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


@pytest.mark.parametrize("after", [0.6, 1.6])
def test_run_d_killed_while_booting_leaves_nothing_running(vm, after: float) -> None:
    """Killed before or after its VM was created: either way the container ends Exited
    and no VM or monitor of it stays behind once the next command has looked."""
    name = f"fault-boot-{int(after * 10)}"
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "run", "-d", "--name", name,
                             "--memory", "128m", "busybox", "sleep", "600"],
                            env=vm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        found = vm.hyperrun("inspect", name)
        if found.returncode != 0:  # killed before it recorded anything
            return
        [doc] = json.loads(found.stdout)
        if doc["State"]["Status"] == "running":  # it got as far as starting its process
            assert _ok(vm.hyperrun("exec", name, "echo", "alive")) == "alive\n"
            return
        assert (doc["State"]["Status"], doc["State"]["ExitCode"]) == ("exited", 137)
        assert "killed" in doc["State"]["Error"]
        assert _until(lambda: not _domains_of(doc["Id"]) and not _monitors_of(doc["Id"]))
    finally:
        vm.hyperrun("rm", "-f", name)


def test_system_prune_keeps_what_runs_and_removes_leftovers(vm) -> None:
    kept = _ok(vm.hyperrun("run", "-d", "--name", "fault-kept", "--memory", "128m",
                           "busybox", "sleep", "600")).strip()
    lost = _ok(vm.hyperrun("run", "-d", "--name", "fault-lost", "--memory", "128m",
                           "busybox", "sleep", "600")).strip()
    done = _ok(vm.hyperrun("run", "-d", "--name", "fault-done", "busybox", "true")).strip()
    try:
        assert _ok(vm.hyperrun("wait", "fault-done")) == "0\n"
        # A killed `rm` removed the record while the VM and its monitor still ran.
        shutil.rmtree(vm.root / "containers" / lost)
        # A killed `run` made a directory and never wrote its record.
        (vm.root / "containers" / ("f" * 64)).mkdir()
        out = _ok(vm.hyperrun("system", "prune", "-f"))
        assert done in out and kept not in out
        assert any(line.endswith(lost[:12]) for line in out.splitlines()), out
        assert "f" * 64 in out
        assert _until(lambda: not _domains_of(lost) and not _monitors_of(lost))
        assert not (vm.root / "containers" / ("f" * 64)).exists()
        # What runs was left alone.
        assert _ok(vm.hyperrun("exec", "fault-kept", "echo", "still")) == "still\n"
        assert _domains_of(kept) and _monitors_of(kept)
    finally:
        vm.hyperrun("rm", "-f", "fault-kept", "fault-done")
