"""`hyperrun run` end to end: every test here boots a real VM through libvirt."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pexpect
import pytest
from helpers import wait_until

from hyperrun.spec import Accel
from hyperrun.store import Store
from hyperrun.vm import accel

pytestmark = pytest.mark.vm


def _out(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stdout.decode()


def _domains(root: Path) -> list[str]:
    """The domains of the store at root (others' tests may run VMs on this libvirt too)."""
    prefix = f"hyperrun-{Store(root).identity()}-"
    conn = libvirt.open("qemu:///system")
    try:
        return [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)]
    finally:
        conn.close()


def test_guest_runs_its_own_kernel(vm) -> None:
    proc = vm.run("busybox", "uname", "-r")
    assert proc.returncode == 0, proc.stderr
    guest = _out(proc).strip()
    assert guest and guest != platform.release()


def test_tcg_fallback_is_one_warning_line_once_per_store(vm) -> None:
    (vm.root / "tcg-warned").unlink(missing_ok=True)
    first, second = (vm.run("--accel", "auto", "busybox", "true") for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0
    if accel.resolve(Accel.AUTO, warn=False) is Accel.TCG:
        lines = first.stderr.decode().splitlines()
        assert len(lines) == 1 and "TCG" in lines[0]
        assert second.stderr == b""
        assert "Accelerator: tcg (software emulation" in _out(vm.hyperrun("info"))


@pytest.mark.parametrize(("command", "status"), [
    (["true"], 0),
    (["sh", "-c", "exit 3"], 3),
    (["/etc/passwd"], 126),
    (["no-such-command"], 127),
    # The entrypoint is PID 1 of its namespace: as under docker, a signal it has no
    # handler for does not kill it, so the signals go to a child and the shell reports.
    (["sh", "-c", 'sh -c "kill -INT \\$\\$"; exit $?'], 130),
    (["sh", "-c", 'sh -c "kill -TERM \\$\\$"; exit $?'], 143),
    # A signal PID 1 cannot ignore (SIGKILL at the CPU time limit) is 128 + N.
    (["sh", "-c", "ulimit -t 1; while :; do :; done"], 137),
])
def test_exit_status_propagates(vm, command: list[str], status: int) -> None:
    proc = vm.run("busybox", *command)
    assert proc.returncode == status, proc.stderr


def test_not_found_says_why(vm) -> None:
    proc = vm.run("busybox", "no-such-command")
    assert b'"no-such-command": executable file not found' in proc.stderr


def test_stdout_and_stderr_are_separate(vm) -> None:
    proc = vm.run("busybox", "sh", "-c", "echo to-out; echo to-err >&2")
    assert proc.stdout == b"to-out\n"
    assert proc.stderr.endswith(b"to-err\n") and b"to-out" not in proc.stderr


def test_stdin_pipes_through_binary_safe(vm) -> None:
    data = os.urandom(3 * 1024 * 1024)
    proc = vm.run("-i", "busybox", "sh", "-c", "cat; cat /dev/null >&2",
                  input=data)
    assert proc.returncode == 0
    assert proc.stdout == data


def test_output_waits_for_a_slow_reader(vm) -> None:
    """A reader that comes back late still gets every byte (`run ... | slow-consumer`)."""
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "run", "--rm", "busybox", "sh",
                             "-c", "head -c 600000 /dev/zero | tr '\\0' x"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=vm.env)
    time.sleep(12)  # the VM boots, writes and exits while nobody reads our pipe
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out == b"x" * 600000


def test_large_stderr_arrives_complete(vm) -> None:
    data = os.urandom(2 * 1024 * 1024)
    proc = vm.run("-i", "busybox", "sh", "-c", "cat >&2", input=data)
    assert proc.returncode == 0
    assert proc.stderr.endswith(data) and proc.stdout == b""


def test_without_i_stdin_is_empty(vm) -> None:
    proc = vm.run("busybox", "wc", "-c", input=b"ignored")
    assert _out(proc).strip() == "0"


def test_image_config_entrypoint_env_workdir_user(vm) -> None:
    proc = vm.run("app")
    assert proc.returncode == 0, proc.stderr
    assert _out(proc).strip() == "user=1000:1000 groups=1000 50 pwd=/srv/data mode=image"


def test_flags_override_image_config(vm) -> None:
    proc = vm.run("-e", "MODE=flag", "-w", "/tmp", "-u", "0:0",
                  "--hostname", "box1", "app",
                  'echo "$(id -u):$(id -g) $(pwd) $MODE $(hostname) $HOSTNAME"')
    assert _out(proc).strip() == "0:0 /tmp flag box1 box1"


def test_entrypoint_override_and_env_file(vm, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("GREETING=hi there\n")
    proc = vm.run("--env-file", str(env_file), "--entrypoint", "sh",
                  "app", "-c", 'echo "$GREETING"')
    assert _out(proc) == "hi there\n"


def test_user_by_name_from_image(vm) -> None:
    proc = vm.run("-u", "app", "busybox", "id")
    assert proc.returncode == 125 and b"unable to find user app" in proc.stderr
    proc = vm.run("-u", "app", "--entrypoint", "id", "app")
    assert _out(proc).startswith("uid=1000(app) gid=1000(app)")


def test_memory_limit_is_the_guests_ram(vm) -> None:
    proc = vm.run("--memory", "256m", "busybox", "sh", "-c",
                  "grep MemTotal /proc/meminfo; head -c 400m /dev/zero | sort >/dev/null; "
                  "echo sort=$?")
    assert proc.returncode == 0, proc.stderr
    total_kib = int(re.search(r"MemTotal:\s+(\d+) kB", _out(proc)).group(1))
    assert 200 * 1024 < total_kib <= 256 * 1024
    # 400 MiB cannot fit in 256 MiB of RAM: the guest's OOM killer ends `sort` (SIGKILL).
    assert "sort=137" in _out(proc)


def test_cpus(vm) -> None:
    assert _out(vm.run("--cpus", "2", "busybox", "nproc")).strip() == "2"
    assert _out(vm.run("busybox", "nproc")).strip() == "1"


def test_writes_do_not_leak_between_containers(vm) -> None:
    base_disks = sorted((vm.root / "disks").iterdir())
    before = [p.stat().st_mtime_ns for p in base_disks]
    first = vm.hyperrun("run", "--name", "writer", "busybox", "sh", "-c",
                        "echo secret > /etc/written && cat /etc/written")
    assert _out(first) == "secret\n"
    second = vm.run("busybox", "cat", "/etc/written")
    assert second.returncode == 1 and second.stdout == b""
    assert [p.stat().st_mtime_ns for p in base_disks] == before
    # The first container keeps its own writable layer until it is removed.
    listed = _out(vm.hyperrun("ps", "-a"))
    assert re.search(r"busybox .* Exited \(0\) .* ago +writer\n", listed), listed
    in_use = vm.hyperrun("rmi", "busybox")
    assert in_use.returncode == 125 and b"being used by container" in in_use.stderr
    assert _out(vm.hyperrun("rm", "writer")) == "writer\n"
    assert "writer" not in _out(vm.hyperrun("ps", "-a"))
    assert vm.hyperrun("rm", "writer").returncode == 125


def test_duplicate_name_is_refused(vm) -> None:
    # A process that never started still ends the container: it shows as exited, not
    # "Created" for ever.
    assert vm.hyperrun("run", "--name", "twice", "busybox", "no-such-command").returncode == 127
    assert re.search(r"Exited \(127\) .* ago +twice\n", _out(vm.hyperrun("ps", "-a")))
    proc = vm.hyperrun("run", "--name", "twice", "busybox", "true")
    assert proc.returncode == 125 and b"already in use" in proc.stderr
    assert vm.hyperrun("rm", "twice").returncode == 0


def _rm_leaves_nothing(vm, *args: str) -> subprocess.CompletedProcess[bytes]:
    before = set((vm.root / "containers").iterdir())
    proc = vm.run(*args)
    assert wait_until(lambda: set((vm.root / "containers").iterdir()) == before), \
        [p.joinpath("state.json").read_text() for p in (vm.root / "containers").iterdir()]
    assert wait_until(lambda: not list((vm.root / "sock").iterdir()))
    assert wait_until(lambda: not _domains(vm.root))
    return proc


def test_rm_leaves_no_domain_or_overlay(vm) -> None:
    assert _rm_leaves_nothing(vm, "busybox", "true").returncode == 0


def test_rm_cleans_up_after_a_failure(vm) -> None:
    assert _rm_leaves_nothing(vm, "busybox", "no-such-command").returncode == 127


def test_boot_failure_shows_console_and_cleans_up(vm, tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-kernel"
    bogus.write_bytes(b"\0" * 4096)
    proc = _rm_leaves_nothing(vm, "--kernel", str(bogus), "busybox", "true")
    assert proc.returncode == 125
    assert b"hyperrun: " in proc.stderr and b"\nTraceback" not in proc.stderr


def test_boot_failure_reports_guest_console(vm, tmp_path: Path) -> None:
    """An initrd without an agent: the kernel panics, and its last words are shown."""
    initrd = vm.root / "boot" / "initrd.img"
    saved = tmp_path / "initrd.img"
    os.replace(initrd, saved)
    try:
        empty = tmp_path / "empty"
        empty.mkdir()
        cpio = subprocess.run(["cpio", "-o", "-H", "newc"], input=b"", cwd=empty,
                              capture_output=True, check=True).stdout
        initrd.write_bytes(cpio)
        proc = _rm_leaves_nothing(vm, "busybox", "true")
    finally:
        os.replace(saved, initrd)
    assert proc.returncode == 125
    assert b"failed to boot" in proc.stderr
    assert b"Kernel panic" in proc.stderr


def test_smallest_memory_still_boots(vm) -> None:
    proc = vm.run("--memory", "64m", "busybox", "true")
    assert proc.returncode == 0, proc.stderr


def test_tty_session(vm) -> None:
    child = pexpect.spawn(sys.executable,
                          ["-m", "hyperrun", "run", "--rm", "-t", "-i", "busybox", "sh"],
                          env=vm.env, dimensions=(30, 100), timeout=60)
    try:
        child.expect(r"[#$] ")
        child.sendline("echo $((6*7)); tty")
        child.expect("42")
        child.expect("/dev/pts/")
        child.sendline("stty size")
        child.expect(r"30 100")
        child.setwinsize(40, 120)
        time.sleep(0.5)
        child.sendline("stty size")
        child.expect(r"40 120")
        child.sendline("sleep 30")
        time.sleep(1)
        child.sendintr()  # Ctrl-C reaches the guest's foreground process, not hyperrun
        child.expect(r"[#$] ")
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 5


def test_sigterm_is_forwarded(vm) -> None:
    # PID 1 of the container's namespace only gets the signals it handles (as in docker).
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "run", "--rm", "busybox",
                             "sh", "-c", "trap 'exit 143' TERM; echo started; sleep 60 & wait"],
                            env=vm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"started\n"
    proc.terminate()
    assert proc.wait(timeout=60) == 143


def test_rm_after_hyperrun_is_killed(vm) -> None:
    """SIGKILL leaves hyperrun no chance to clean up: libvirt ends the VM, the next run
    removes the files."""
    containers = vm.root / "containers"
    before = set(containers.iterdir())
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "run", "--rm", "busybox",
                             "sh", "-c", "echo started; sleep 60"],
                            env=vm.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout.readline() == b"started\n"
    orphans = set(containers.iterdir()) - before
    assert len(orphans) == 1
    proc.kill()
    proc.wait()
    assert wait_until(lambda: not _domains(vm.root))
    assert orphans <= set(containers.iterdir())  # nobody was left to remove it ...
    assert vm.run("busybox", "true").returncode == 0
    assert not orphans & set(containers.iterdir())  # ... until the next run
