"""The inspection verbs on a container that really runs: one VM boot for all of them."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hyperrun.containers import names

pytestmark = pytest.mark.vm

SCRIPT = "echo started; read x; exit 3"


def _ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def _when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_running_then_exited_container_as_ps_inspect_and_info_show_it(vm) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "run", "-i", "--cpus", "1",
                             "--memory", "192m", "--cap-add", "sys_admin", "--cap-drop",
                             "CAP_MKNOD", "busybox", "sh", "-c", SCRIPT],
                            env=vm.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"started\n", proc.stderr.read1().decode()
        [row] = [json.loads(line) for line in
                 _ok(vm.hyperrun("ps", "--format", "json")).splitlines()]
        name = row["Names"]
        adjective, _, surname = re.sub(r"\d+$", "", name).partition("_")
        assert adjective in names.ADJECTIVES and surname in names.SURNAMES
        assert row["State"] == "running" and row["Status"].startswith("Up ")
        assert row["CPUs"] == "1" and row["Memory"] == "192MiB"

        [doc] = json.loads(_ok(vm.hyperrun("inspect", name)))
        state = doc["State"]
        assert state["Status"] == "running" and state["Running"] is True
        assert state["FinishedAt"] == "0001-01-01T00:00:00Z"
        assert _when(state["StartedAt"]) >= _when(doc["Created"])
        cmdline = Path(f"/proc/{state['Pid']}/cmdline").read_bytes().split(b"\0")
        assert b"qemu" in cmdline[0].rsplit(b"/", 1)[-1]  # the VM's own QEMU process
        assert f"guest={doc['Hyperrun']['Domain']}".encode() in b",".join(cmdline)
        hr = doc["Hyperrun"]
        assert hr["URI"] == "qemu:///system" and hr["Accelerator"] in ("kvm", "tcg")
        assert hr["Kernel"] == str(vm.root / "boot" / "vmlinuz")
        assert Path(hr["Overlay"]).is_file() and Path(hr["BaseDisk"]).is_file()
        assert doc["Config"]["Cmd"] == ["sh", "-c", SCRIPT] and doc["Config"]["OpenStdin"]
        assert doc["Path"] == "sh" and doc["Args"] == ["-c", SCRIPT]
        assert "  Running: 1" in _ok(vm.hyperrun("info")).splitlines()

        # Renamed while it runs: its `run` recording the exit must keep the new name.
        assert _ok(vm.hyperrun("rename", name, "renamed")) == ""
        proc.stdin.write(b"\n")
        proc.stdin.close()
        assert proc.wait(timeout=120) == 3, proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()

    [doc] = json.loads(_ok(vm.hyperrun("inspect", "renamed")))
    state = doc["State"]
    assert doc["Name"] == "/renamed" and doc["Id"].startswith(row["ID"])
    assert state["Status"] == "exited" and state["Running"] is False and state["Pid"] == 0
    assert state["ExitCode"] == 3 and state["Error"] == ""
    assert _when(state["FinishedAt"]) > _when(state["StartedAt"]) >= _when(doc["Created"])
    assert doc["HostConfig"] == {"NanoCpus": 10**9, "Memory": 192 << 20, "AutoRemove": False,
                                 "Privileged": False, "CapAdd": ["CAP_SYS_ADMIN"],
                                 "CapDrop": ["CAP_MKNOD"],
                                 "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                                 "NetworkMode": "user", "PortBindings": {}, "Dns": [],
                                 "DnsSearch": [], "ExtraHosts": None, "Binds": None, "Tmpfs": None}
    assert _ok(vm.hyperrun("inspect", "-f", "{{.State.ExitCode}} {{.Config.Image}}",
                           "renamed")) == "3 busybox\n"
    listed = _ok(vm.hyperrun("ps", "-a", "-f", "name=^renamed$", "--format",
                             "{{.Status}}|{{.Names}}"))
    assert re.fullmatch(r"Exited \(3\) .* ago\|renamed\n", listed), listed
    assert _ok(vm.hyperrun("ps", "-q")) == ""
    assert vm.hyperrun("rm", "renamed").returncode == 0
