"""Warm starts with real VMs: `hyperrun pool` and `run` taking a VM booted ahead."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt
import pytest
from helpers import until
from test_network_vm import HTTPD, fetch

pytestmark = pytest.mark.vm

MEMORY = "128m"  # the pool's and the served runs'


def _ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def _pooled(vm) -> set[str]:
    """The ids of the store's pooled VMs (ready or not)."""
    vms = Path(vm.root) / "pool" / "vms"
    return {d.name for d in vms.iterdir()} if vms.is_dir() else set()


def _ready(vm) -> int:
    """The READY column of `pool ls` for the one pool."""
    lines = _ok(vm.hyperrun("pool", "ls")).splitlines()
    return int(lines[1].split()[7]) if len(lines) > 1 else 0


def _domains(vm) -> set[str]:
    """Names of the libvirt domains of this test store."""
    store_id = (Path(vm.root) / "id").read_text().strip()
    conn = libvirt.open("qemu:///system")
    try:
        return {d.name() for d in conn.listAllDomains()
                if d.name().startswith(f"hyperrun-{store_id}-")}
    finally:
        conn.close()


@pytest.fixture
def pooled(vm) -> Iterator[str]:
    """A pool of one busybox VM with MEMORY; its VM's id. Removed however the test ends."""
    try:
        _ok(vm.hyperrun("pool", "add", "busybox", "--size", "1", "--memory", MEMORY))
        [vm_id] = _pooled(vm)
        assert _ready(vm) == 1
        yield vm_id
    finally:
        vm.hyperrun("pool", "rm", "--all")


def test_pool_serves_a_run_and_refills(vm, pooled: str) -> None:
    out = vm.run("--memory", MEMORY, "busybox", "sh", "-c", "echo hi; hostname; exit 3")
    assert out.returncode == 3, out.stderr.decode()
    # The container is the pooled VM: its id (and so its host name) is the VM's.
    assert out.stdout.decode() == f"hi\n{pooled[:12]}\n"
    assert until(lambda: _ready(vm) == 1 and pooled not in _pooled(vm))
    [refill] = _pooled(vm)
    assert refill != pooled
    # `ps -a` never lists pooled VMs as containers.
    assert refill[:12] not in _ok(vm.hyperrun("ps", "-a", "--no-trunc"))


def test_a_run_the_pool_cannot_serve_boots_cold(vm, pooled: str) -> None:
    for args in (("--memory", "256m"), ("--memory", MEMORY, "--network", "none"),
                 ("--memory", MEMORY, "--log-opt", "max-size=1m")):
        out = vm.run(*args, "busybox", "hostname")
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode().strip() != pooled[:12]
    assert _pooled(vm) == {pooled}
    assert _ready(vm) == 1


def test_two_runs_at_once_against_a_pool_of_one(vm, pooled: str) -> None:
    with ThreadPoolExecutor(2) as ex:
        outs = list(ex.map(lambda _: vm.run("--memory", MEMORY, "busybox", "hostname"),
                           range(2)))
    names = {_ok(out).strip() for out in outs}
    assert len(names) == 2  # two containers, two VMs
    assert pooled[:12] in names  # one of them warm
    assert until(lambda: _ready(vm) == 1)


def test_a_detached_run_from_the_pool(vm, pooled: str) -> None:
    cid = _ok(vm.hyperrun("run", "-d", "--memory", MEMORY, "busybox", "sleep", "300")).strip()
    try:
        assert cid == pooled
        assert _ok(vm.hyperrun("exec", cid, "echo", "in")) == "in\n"
        assert cid[:12] in _ok(vm.hyperrun("ps"))
    finally:
        _ok(vm.hyperrun("rm", "-f", cid))


def test_a_published_port_is_added_to_the_pooled_vm(vm, pooled: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cid = _ok(vm.hyperrun("run", "-d", "--memory", MEMORY, "-p", f"127.0.0.1:{port}:80",
                          "busybox", "sh", "-c", HTTPD)).strip()
    try:
        assert cid == pooled
        assert fetch(f"http://127.0.0.1:{port}/") == b"hi from the guest\n"
        assert _ok(vm.hyperrun("port", cid)) == f"80/tcp -> 127.0.0.1:{port}\n"
    finally:
        _ok(vm.hyperrun("rm", "-f", cid))


def test_the_guest_clock_is_the_hosts(vm, pooled: str) -> None:
    time.sleep(5)  # the VM waits in the pool a while
    out = _ok(vm.run("--memory", MEMORY, "busybox", "date", "+%s"))
    assert abs(int(out) - time.time()) < 3


def test_system_prune_keeps_a_pool(vm, pooled: str) -> None:
    _ok(vm.hyperrun("system", "prune", "-f"))
    assert _pooled(vm) == {pooled}
    assert _ready(vm) == 1
    out = vm.run("--memory", MEMORY, "busybox", "hostname")
    assert _ok(out).strip() == pooled[:12]


def test_pool_rm_leaves_no_domain_or_file(vm, pooled: str) -> None:
    assert any(pooled[:12] in name for name in _domains(vm))
    _ok(vm.hyperrun("pool", "rm", "busybox"))
    assert _pooled(vm) == set()
    assert not any(pooled[:12] in name for name in _domains(vm))
    assert not list((Path(vm.root) / "sock").glob(f"{pooled[:12]}.*"))
    assert _ok(vm.hyperrun("pool", "ls")).count("\n") == 1  # the header alone


def test_a_killed_claimer_leaves_nothing_the_next_command_keeps(vm, pooled: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "run", "--memory", MEMORY,
                             "busybox", "sleep", "300"], env=vm.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert until(lambda: "Up" in _ok(vm.hyperrun("ps", "--filter", f"id={pooled}")))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # libvirt holds a pooled VM, not the killed `run`: the next command ends it.
    assert "Exited (137)" in _ok(vm.hyperrun("ps", "-a", "--filter", f"id={pooled}"))
    assert until(lambda: not any(pooled[:12] in name for name in _domains(vm)))
    _ok(vm.hyperrun("rm", pooled))
    assert not (Path(vm.root) / "containers" / pooled).exists()


def test_a_claim_by_a_dead_process_is_swept(vm, pooled: str) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, check=True)
    directory = Path(vm.root) / "pool" / "vms" / pooled
    (directory / "claim").write_text(dead.stdout.decode().strip())
    # The next pool command sweeps it, and boots a replacement.
    assert _ready(vm) == 0
    assert pooled not in _pooled(vm)
    assert until(lambda: not any(pooled[:12] in name for name in _domains(vm)))
    _ok(vm.hyperrun("pool", "add", "busybox", "--size", "1", "--memory", MEMORY))
    assert _ready(vm) == 1
