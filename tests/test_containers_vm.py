"""Containers against a hostile or crowded host: each test boots one VM and checks a group
of things around it (isolation from the caller, private data, other stores, killed runs)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import libvirt
import pytest
from conftest import REPO, VmEnv
from helpers import wait_until

from hyperrun.containers import names, records
from hyperrun.store import Store

pytestmark = pytest.mark.vm


def _record(root: Path, name: str) -> dict:
    for path in (root / "containers").glob("*/state.json"):
        data = json.loads(path.read_text())
        if data["name"] == name:
            return data
    raise AssertionError(f"no container {name} in {root}")


def _domain_exists(uuid: str) -> bool:
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByUUIDString(uuid)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def _qemu_ids(overlay: Path) -> tuple[int, int]:
    """The real uid and gid of the QEMU process that has overlay on its command line."""
    for proc in Path("/proc").iterdir():
        try:
            if str(overlay).encode() in (proc / "cmdline").read_bytes():
                status = (proc / "status").read_text().splitlines()
                uid = next(line for line in status if line.startswith("Uid:")).split()[1]
                gid = next(line for line in status if line.startswith("Gid:")).split()[1]
                return int(uid), int(gid)
        except (OSError, StopIteration):
            continue
    raise AssertionError(f"no QEMU process uses {overlay}")


def _readable_by_nobody(path: Path) -> bool:
    """What an ordinary local user sees: can `nobody` read (or list) path?"""
    tool = ["ls", str(path)] if path.is_dir() else ["head", "-c1", str(path)]
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *tool], capture_output=True)
    return proc.returncode == 0


def _mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_run_ignores_callers_directory_and_path_and_keeps_data_private(vm, tmp_path) -> None:
    """Run from a directory that plants Python modules and tools: none of them may run as
    root (the reaper child included), the run works, and container data is root's and
    QEMU's alone while it runs and root's alone after."""
    evil = tmp_path / "evil"
    marker = tmp_path / "planted-code-ran"
    payload = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    (evil / "hyperrun").mkdir(parents=True)
    (evil / "hyperrun" / "__init__.py").write_text(payload)
    (evil / "libvirt.py").write_text(payload)
    for tool in ("qemu-img", "mkfs.ext4", "mount", "umount", "python3"):
        (evil / tool).write_text(f"#!/bin/sh\necho \"$0\" >> {marker}\nexit 0\n")
        (evil / tool).chmod(0o755)
    # The parent is started the way the `hyperrun` script is (its own directory, not the
    # caller's, on sys.path); PYTHONPATH only points it at this work tree's code.
    env = {**vm.env, "PATH": f"{evil}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-P", "-m", "hyperrun", "run", "-i",
                             "--name", "private", "busybox", "sh", "-c", "echo started; read x"],
                            cwd=evil, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"started\n", proc.stderr.read1().decode()
        c = _record(vm.root, "private")
        files = records.paths(Store(vm.root), c["id"])
        base = next((vm.root / "disks").glob("*.ext4"))
        qemu_uid, qemu_gid = _qemu_ids(files.overlay)
        assert qemu_uid != 0
        # While it runs: QEMU's (lent by libvirt) or root's, never everybody's.
        assert _mode(files.overlay) == (0o600, qemu_uid, qemu_gid)
        assert _mode(base) == (0o440, 0, qemu_gid)
        assert _mode(files.console_log)[:2] == (0o600, 0)
        assert _mode(files.record)[:2] == (0o600, 0)
        assert _mode(files.dir)[:2] == (0o711, 0)
        for path in (files.overlay, base, files.console_log, files.record, files.dir):
            assert not _readable_by_nobody(path), path
        proc.stdin.write(b"\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
    # The detached reaper (an isolated python) did its part: the sockets are gone.
    assert wait_until(lambda: not files.ctl_socket.exists() and not files.io_socket.exists())
    assert wait_until(lambda: _mode(files.overlay)[1] == 0)  # libvirt gave it back
    assert _mode(files.overlay) == (0o600, 0, 0)
    assert _mode(files.console_log)[:2] == (0o600, 0)
    for path in (files.overlay, files.console_log, files.record):
        assert not _readable_by_nobody(path), path
    assert not marker.exists(), marker.read_text()
    assert vm.hyperrun("rm", "private").returncode == 0


def test_other_store_cannot_see_or_touch_a_container_and_a_killed_run_is_reconciled(
        vm) -> None:
    other = Path(tempfile.mkdtemp(prefix="hyperrun-other-", dir="/var/tmp"))
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "run", "--name", "shared",
                             "busybox", "sh", "-c", "echo started; sleep 120"],
                            env=vm.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline() == b"started\n"
        assert wait_until(lambda: "shared" in vm.hyperrun("ps").stdout.decode())
        mine = _record(vm.root, "shared")
        assert _domain_exists(mine["domain_uuid"])

        # The other store has a container of the same name whose record even claims this
        # store's domain: the domain's metadata says whose it is.
        theirs = Store(other)
        forged = records.create(theirs, names.new_id(), "shared", "busybox", mine["image_id"],
                                ("true",), remove=False)
        record = records.paths(theirs, forged.id).record
        record.write_text(json.dumps({**json.loads(record.read_text()),
                                      "domain": mine["domain"],
                                      "domain_uuid": mine["domain_uuid"]}))
        stranger = VmEnv(other)
        assert "shared" not in stranger.hyperrun("ps").stdout.decode()
        assert " Up " not in stranger.hyperrun("ps", "-a").stdout.decode()
        gone = stranger.hyperrun("rm", "-f", mine["id"])
        assert gone.returncode == 125 and b"no such container" in gone.stderr
        assert stranger.hyperrun("rm", "-f", "shared").returncode == 0
        assert _domain_exists(mine["domain_uuid"])
        assert proc.poll() is None
        assert "shared" in vm.hyperrun("ps").stdout.decode()

        # SIGKILL: no chance to record anything; libvirt ends the VM with the connection.
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert wait_until(lambda: not _domain_exists(mine["domain_uuid"]))
        listed = vm.hyperrun("ps", "-a")
        line = next(x for x in listed.stdout.decode().splitlines() if x.endswith(" shared"))
        assert "Exited (137)" in line, listed.stdout
        assert b"was killed" in listed.stderr
        again = vm.hyperrun("ps", "-a")  # recorded once, for good
        assert b"was killed" not in again.stderr and "Exited (137)" in again.stdout.decode()
        assert not records.paths(Store(vm.root), mine["id"]).ctl_socket.exists()
        assert vm.hyperrun("rm", "shared").returncode == 0
        assert "shared" not in vm.hyperrun("ps", "-a").stdout.decode()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(other, ignore_errors=True)
