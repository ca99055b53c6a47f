"""Bad input: one line with a hint, exit status 125 (2 for usage), never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _hyperrun(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperrun", *args], capture_output=True,
                          text=True, env={**os.environ, "HYPERRUN_ROOT": str(root), **env},
                          timeout=60)


def _one_line_error(proc: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hyperrun: "), proc.stderr
    assert "hint:" in lines[0]
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def root(vm) -> Path:
    """The VM tests' store: images and boot assets are there."""
    return vm.root


def test_image_not_found(root: Path) -> None:
    # --pull never: the default (missing) would ask Docker Hub; tests stay on loopback.
    _one_line_error(_hyperrun(root, "run", "--rm", "--pull", "never", "no-such-image"), 125,
                    "no-such-image")


@pytest.mark.parametrize("memory", ["lots", "12q", "1m"])
def test_invalid_memory(root: Path, memory: str) -> None:
    _one_line_error(_hyperrun(root, "run", "--memory", memory, "busybox", "true"), 125,
                    "--memory")


@pytest.mark.parametrize("cpus", ["0", "many", "1.5"])
def test_invalid_cpus(root: Path, cpus: str) -> None:
    _one_line_error(_hyperrun(root, "run", "--cpus", cpus, "busybox", "true"), 125, "--cpus")


def test_kvm_requested_where_unavailable(root: Path) -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    if ("vmx" in cpuinfo or "svm" in cpuinfo) and os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("this host has usable hardware virtualisation")
    _one_line_error(_hyperrun(root, "run", "--accel", "kvm", "busybox", "true"), 125, "kvm")


def test_libvirt_unreachable(root: Path) -> None:
    proc = _hyperrun(root, "run", "--connect", "qemu:///system?socket=/nonexistent/sock",
                     "--accel", "tcg", "busybox", "true")
    _one_line_error(proc, 125, "libvirt")


def test_kernel_missing_says_run_setup(root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "store"
    shutil.copytree(root, empty, ignore=shutil.ignore_patterns("boot", "disks", "sock",
                                                               "containers"))
    _one_line_error(_hyperrun(empty, "run", "--accel", "tcg", "busybox", "true"), 125,
                    "scripts/setup")


def test_unknown_option_is_usage_error(root: Path) -> None:
    _one_line_error(_hyperrun(root, "frobnicate"), 2)


def test_bad_env_entry(root: Path) -> None:
    _one_line_error(_hyperrun(root, "run", "-e", "=x", "busybox", "true"), 125, "=x")
