"""Bad input: one line with a hint, exit status 125 (usage errors too), never a traceback.

No test here boots a VM: each uses a plain store with a tiny image and stand-in boot
files, so every error must come before anything is booted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ImageSpec, file, oci_layout_files, tar_bytes, write_tar

from hyperrun.errors import HyperrunError
from hyperrun.spec import Accel
from hyperrun.vm import accel

BIG_ENV = "BIG=" + "x" * int(3.9 * (1 << 20))  # under load's 4 MiB config limit, over CTL_MAX


def _hyperrun(root: Path, *args: str, cwd: Path | None = None,
              **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperrun", *args], capture_output=True,
                          text=True, env={**os.environ, "HYPERRUN_ROOT": str(root), **env},
                          timeout=60, cwd=cwd)


def _one_line_error(proc: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hyperrun: "), proc.stderr
    assert "hint:" in lines[0] and "internal error" not in lines[0]
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with two tiny images (one with a 3.9 MiB Env) and stand-in boot files."""
    root = tmp_path_factory.mktemp("cli-errors") / "store"
    layer = tar_bytes(file("bin/sh", "#!/bin/false\n", mode=0o755))
    images = [(ImageSpec(layers=[layer], config={"Cmd": ["sh"]}), "busybox:latest"),
              (ImageSpec(layers=[layer], config={"Cmd": ["sh"], "Env": [BIG_ENV]}),
               "bigenv:latest")]
    archive = write_tar(oci_layout_files(images), root.parent / "images.tar")
    loaded = _hyperrun(root, "load", "-q", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    (root / "boot").mkdir(exist_ok=True)
    for name in ("vmlinuz", "initrd.img", "hyperrun-monitor"):
        (root / "boot" / name).write_bytes(b"not booted by these tests")
    return root


def _nothing_created(root: Path) -> bool:
    containers = root / "containers"
    return not containers.exists() or not any(containers.iterdir())


def test_image_not_found(root: Path) -> None:
    # --pull never: the default (missing) would ask Docker Hub; tests stay on loopback.
    _one_line_error(_hyperrun(root, "run", "--rm", "--pull", "never", "no-such-image"), 125,
                    "no-such-image")


@pytest.mark.parametrize("memory", ["lots", "12q", "1m", "nan", "inf", "1e400", "-1g", "-1",
                                    "0x100m", "1" * 40])
def test_invalid_memory(root: Path, memory: str) -> None:
    _one_line_error(_hyperrun(root, "run", f"--memory={memory}", "busybox", "true"), 125,
                    "--memory")


@pytest.mark.parametrize("cpus", ["0", "many", "1.5", "nan", "inf", "1e400", "-inf", "65"])
def test_invalid_cpus(root: Path, cpus: str) -> None:
    _one_line_error(_hyperrun(root, "run", f"--cpus={cpus}", "busybox", "true"), 125, "--cpus")


@pytest.mark.parametrize("name", ["a/b", "x" * 300, "-leading-dash", ".hidden", "", "a b",
                                  "<script>"])
def test_invalid_name(root: Path, name: str) -> None:
    _one_line_error(_hyperrun(root, "run", f"--name={name}", "busybox", "true"), 125,
                    "invalid container name")
    assert _nothing_created(root)


@pytest.mark.parametrize("hostname", ["a\0b", "x" * 65, "-dash", "has space", "a..b", "ünï"])
def test_invalid_hostname(root: Path, hostname: str) -> None:
    if "\0" in hostname:  # argv cannot carry a NUL: test the parser itself
        from hyperrun.cli.run import validate_hostname
        from hyperrun.errors import UsageError
        with pytest.raises(UsageError, match="--hostname"):
            validate_hostname(hostname)
        return
    _one_line_error(_hyperrun(root, "run", f"--hostname={hostname}", "busybox", "true"), 125,
                    "--hostname")
    assert _nothing_created(root)


@pytest.mark.parametrize("flags", [("--cap-add", "SYS_ADMN"), ("--cap-drop", "CAP_NOPE"),
                                   ("--cap-add", ""), ("--cap-add", "CAP_ALL"),
                                   ("--privileged", "--cap-drop", "bogus")])
def test_unknown_capability(root: Path, flags: tuple[str, ...]) -> None:
    # Before anything boots (the boot files here are stand-ins), also with --privileged.
    _one_line_error(_hyperrun(root, "run", *flags, "busybox", "true"), 125,
                    "unknown capability", "ALL")
    assert _nothing_created(root)


def test_kvm_requested_where_unavailable(root: Path) -> None:
    if accel.kvm_problem() is None:
        pytest.skip("this host has usable hardware virtualisation")
    _one_line_error(_hyperrun(root, "run", "--accel", "kvm", "busybox", "true"), 125, "kvm")


def test_libvirt_unreachable(root: Path) -> None:
    proc = _hyperrun(root, "run", "--connect", "qemu:///system?socket=/nonexistent/sock",
                     "--accel", "tcg", "busybox", "true")
    _one_line_error(proc, 125, "libvirt")
    assert _nothing_created(root)


def test_kernel_missing_says_run_setup(root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "store"
    shutil.copytree(root, empty, ignore=shutil.ignore_patterns("boot", "disks", "sock",
                                                               "containers"))
    _one_line_error(_hyperrun(empty, "run", "--accel", "tcg", "busybox", "true"), 125,
                    "scripts/setup")


def test_unknown_option_is_usage_error(root: Path) -> None:
    _one_line_error(_hyperrun(root, "frobnicate"), 125)


def test_bad_env_entry(root: Path) -> None:
    _one_line_error(_hyperrun(root, "run", "-e", "=x", "busybox", "true"), 125, "=x")


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null", "/proc/self", "fifo"])
def test_env_file_must_be_a_regular_file(root: Path, tmp_path: Path, special: str) -> None:
    if special == "fifo":
        special = str(tmp_path / "fifo")
        os.mkfifo(special)  # nobody writes to it: reading must not wait
    proc = _hyperrun(root, "run", "--env-file", special, "busybox", "true")
    _one_line_error(proc, 125, "--env-file", "not a regular file")


def test_env_file_is_bounded(root: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.env"
    big.write_text(("K=" + "v" * 1000 + "\n") * 2100)  # 2 MB
    _one_line_error(_hyperrun(root, "run", "--env-file", str(big), "busybox", "true"), 125,
                    "--env-file", "larger than 1 MiB")


def test_env_file_not_text(root: Path, tmp_path: Path) -> None:
    binary = tmp_path / "binary.env"
    binary.write_bytes(b"K=\xff\xfe\n")
    _one_line_error(_hyperrun(root, "run", "--env-file", str(binary), "busybox", "true"), 125,
                    "not UTF-8")


def test_environment_too_large_for_the_guest_is_refused_before_boot(root: Path,
                                                                    tmp_path: Path) -> None:
    """Each part fits, the EXEC message does not: refused on the host, nothing booted."""
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"K{i}={'v' * 1000}\n" for i in range(700)))  # 0.7 MB
    more = [arg for i in range(4) for arg in ("-e", f"MORE{i}=" + "m" * 100_000)]
    proc = _hyperrun(root, "run", "--rm", "--env-file", str(env_file), *more,
                     "busybox", "true")
    _one_line_error(proc, 125, "the guest accepts at most 1048576 bytes")
    assert _nothing_created(root)


def test_image_env_too_large_for_the_guest(root: Path) -> None:
    _one_line_error(_hyperrun(root, "run", "--rm", "bigenv"), 125,
                    "the guest accepts at most")


def test_tcg_is_only_picked_where_kvm_is_unusable() -> None:
    expected = Accel.KVM if accel.kvm_problem() is None else Accel.TCG
    assert accel.resolve(Accel.AUTO, warn=False) is expected


def test_the_tcg_warning_is_given_once_per_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse2\n")  # no vmx, no svm
    marker = tmp_path / "tcg-warned"
    for _ in range(2):
        assert accel.resolve(Accel.AUTO, once=marker, cpuinfo=cpuinfo) is Accel.TCG
    err = capsys.readouterr().err
    assert err.count("using TCG software emulation") == 1 and marker.exists()
    with pytest.raises(HyperrunError, match="--accel kvm"):
        accel.resolve(Accel.KVM, once=marker, cpuinfo=cpuinfo)


def test_failure_before_boot_leaves_nothing(root: Path) -> None:
    """libvirt refuses the domain (QEMU cannot reach this 0700 temp store): the container
    was already recorded by then, and must not be left behind as "Created"."""
    proc = _hyperrun(root, "run", "--name", "never-booted", "--accel", "tcg", "busybox", "true")
    _one_line_error(proc, 125, "libvirt could not start the VM")
    assert _nothing_created(root)
    assert not any((root / "sock").iterdir())
    listed = _hyperrun(root, "ps", "-a")
    assert listed.returncode == 0 and "never-booted" not in listed.stdout


@pytest.mark.parametrize("verb", [("ps", "-a"), ("images",), ("volume", "ls")])
def test_a_store_that_is_a_file_is_one_clear_error(tmp_path: Path, verb: tuple[str, ...]) -> None:
    not_a_dir = tmp_path / "store.tar"
    not_a_dir.write_bytes(b"a file, not a store")
    _one_line_error(_hyperrun(not_a_dir, *verb), 125, "not a directory", "HYPERRUN_ROOT")
    assert not_a_dir.read_bytes() == b"a file, not a store"
