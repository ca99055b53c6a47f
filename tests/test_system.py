"""`info`, `version`, usage errors (exit 125), and the QEMU pid `inspect` reports."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest
from cli_store import hyperrun, make, ok, one_line_error, store_with_image
from helpers import wait_until

from hyperrun import __version__
from hyperrun.containers import status

UNREACHABLE = "qemu:///system?socket=/nonexistent/libvirt-sock"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return store_with_image(tmp_path)


def fake_bzimage(path: Path, version: str) -> None:
    """Just enough of an x86 boot header to carry a kernel version string."""
    data = bytearray(0x1000)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x400 - 0x200).to_bytes(2, "little")
    data[0x400:0x400 + len(version)] = version.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def test_info(root: Path) -> None:
    make(root, "a", exit_status=0)
    make(root, "b", exit_status=1)
    make(root, "c")  # being set up by this process
    fake_bzimage(root / "boot" / "vmlinuz", "6.1.99 (builder@host) #1 SMP")
    out = ok(hyperrun(root, "info"))
    for line in (" Containers: 3", "  Running: 0", "  Created: 1", "  Exited: 2", " Images: 1",
                 f" Guest kernel: {root}/boot/vmlinuz (6.1.99 (builder@host) #1 SMP)",
                 f" Guest initrd: {root}/boot/initrd.img (missing)"):
        assert line in out.splitlines(), out
    assert " QEMU: " in out and " libvirt: " in out and f" Store: {root} (" in out
    assert " Accelerator: kvm" in out or "KVM unavailable: " in out


def test_info_without_libvirt(root: Path) -> None:
    make(root, "a", exit_status=0)
    make(root, "b")
    proc = hyperrun(root, "info", "--connect", UNREACHABLE)
    assert proc.returncode == 0 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert any(line.startswith(" libvirt: unreachable (cannot reach libvirt") for line in lines)
    for line in (" Containers: 2", "  Exited: 1", "  Unknown (libvirt unreachable): 1",
                 " Images: 1", f" Guest kernel: {root}/boot/vmlinuz (missing: run scripts/setup)"):
        assert line in lines, proc.stdout


def test_version(root: Path) -> None:
    out = ok(hyperrun(root, "version")).splitlines()
    assert f" Version: {__version__}" in out and f" Python: {platform.python_version()}" in out
    assert any(line.startswith(" QEMU: ") for line in out)
    proc = hyperrun(root, "version", "--connect", UNREACHABLE)
    assert f" Version: {__version__}" in proc.stdout  # the client's part still shows
    one_line_error(proc, 125, "cannot reach libvirt")


@pytest.mark.parametrize("argv", [["frobnicate"], ["rm"], ["rename", "one"], ["inspect"],
                                  ["ps", "--bogus"], ["inspect", "--type", "volume", "x"],
                                  []])
def test_usage_errors_exit_125_as_dockers_do(root: Path, argv: list[str]) -> None:
    one_line_error(hyperrun(root, *argv), 125)


def test_qemu_pid_is_believed_only_for_the_process_that_runs_the_domain(tmp_path: Path) -> None:
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                 "-name", "guest=hyperrun-x-1,debug-threads=on"])
    try:
        # Until it has exec'd, the child shows the parent's command line.
        assert wait_until(lambda: b"guest=" in Path(f"/proc/{stand_in.pid}/cmdline").read_bytes())
        (tmp_path / "hyperrun-x-1.pid").write_text(f"{stand_in.pid}\n")
        (tmp_path / "hyperrun-x-2.pid").write_text(f"{stand_in.pid}\n")  # not its domain
        (tmp_path / "hyperrun-x-3.pid").write_text("garbage")
        assert status.qemu_pid("hyperrun-x-1", tmp_path) == stand_in.pid
        assert status.qemu_pid("hyperrun-x-2", tmp_path) == 0
        assert status.qemu_pid("hyperrun-x-3", tmp_path) == 0
        assert status.qemu_pid("hyperrun-x-4", tmp_path) == 0
    finally:
        stand_in.kill()
        stand_in.wait()
    assert status.qemu_pid("hyperrun-x-1", tmp_path) == 0  # a stale pid file
