"""Inside the guest: the workload's own namespaces and docker's capabilities (real VMs).

Boots are slow under TCG, so each test checks as much as one boot can show.
"""

from __future__ import annotations

import re
import subprocess

import pytest

pytestmark = pytest.mark.vm

DOCKER_DEFAULT = 0xA80425FB  # CHOWN ... AUDIT_WRITE, docker's default set
SYS_ADMIN = 1 << 21
LINUX_6_1_ALL = (1 << 41) - 1  # capabilities 0 to 40 (CHECKPOINT_RESTORE)

# Prints the capability sets, then what the container can see of other processes.
PROBE = (
    "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status;"
    " echo pid=$$ host=$(hostname);"
    " for d in /proc/[0-9]*; do echo proc=${d#/proc/}:$(cat $d/comm); done"
)


def _probe(proc: subprocess.CompletedProcess[bytes]) -> tuple[dict[str, int], list[str]]:
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    caps = {k: int(v, 16) for k, v in re.findall(r"^(Cap\w+):\s*([0-9a-f]+)$", text, re.M)}
    return caps, text.splitlines()


def test_workload_is_pid_1_and_sees_no_agent(vm) -> None:
    proc = vm.run("--hostname", "iso-1", "busybox", "sh", "-c",
                  PROBE + "; ps -o pid,comm; mkdir -p /m;"
                  " mount -t tmpfs x /m 2>/dev/null && echo mounted || echo mount-refused")
    caps, lines = _probe(proc)
    # Docker's default set, effective and bounding; nothing inheritable or ambient.
    assert caps == {"CapInh": 0, "CapPrm": DOCKER_DEFAULT, "CapEff": DOCKER_DEFAULT,
                    "CapBnd": DOCKER_DEFAULT, "CapAmb": 0}
    assert "pid=1 host=iso-1" in lines
    # Only the container's own processes: PID 1 is the entrypoint; no agent (/init),
    # no kernel threads. The loop's subshells and `cat`s are the only others.
    procs = dict(line[len("proc="):].split(":", 1) for line in lines if line.startswith("proc="))
    assert procs["1"] == "sh", procs
    assert set(procs.values()) <= {"sh", "cat", ""}, procs  # "": gone before it was read
    ps = [line.split() for line in lines if re.fullmatch(r"\s*\d+ \S+", line)]
    assert ps[0] == ["1", "sh"] and {comm for _, comm in ps} <= {"sh", "ps"}, ps
    # With no pid of the agent in sight there is nothing to signal or ptrace; and
    # without CAP_SYS_ADMIN no new /proc of another namespace can be mounted either.
    assert lines[-1] == "mount-refused"


@pytest.mark.parametrize(("flags", "want"), [
    (("--cap-drop", "ALL"), 0),
    (("--cap-add", "SYS_ADMIN"), DOCKER_DEFAULT | SYS_ADMIN),
    (("--cap-drop", "chown", "--cap-drop", "CAP_NET_RAW", "--cap-add", "cap_sys_ptrace"),
     (DOCKER_DEFAULT & ~(1 << 0) & ~(1 << 13)) | (1 << 19)),
    (("--privileged",), LINUX_6_1_ALL),
])
def test_capability_flags(vm, flags: tuple[str, ...], want: int) -> None:
    caps, _ = _probe(vm.run(*flags, "busybox", "sh", "-c", PROBE))
    assert caps == {"CapInh": 0, "CapPrm": want, "CapEff": want, "CapBnd": want, "CapAmb": 0}


def test_non_root_user_has_no_effective_capabilities(vm) -> None:
    # As under docker: the bounding set is the container's, but a non-root program gets
    # nothing permitted or effective at execve.
    caps, _ = _probe(vm.run("--user", "1000", "busybox", "sh", "-c", PROBE))
    assert caps == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": DOCKER_DEFAULT,
                    "CapAmb": 0}
