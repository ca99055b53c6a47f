"""Volumes with real VMs: bind mounts both ways, read-only on the host's side, named
volumes across containers, tmpfs, symlinks that stay inside the guest, and restarts.

One detached container (`vols`) carries every kind of mount, so most checks cost an
`exec`, not a boot.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

PROBE = "/etc/hyperrun-volume-probe"  # must never appear on the host


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


@dataclass
class Vols:
    name: str
    rw: Path
    ro: Path


@pytest.fixture(scope="module")
def vols(vm) -> Iterator[Vols]:
    # Under /var/tmp: virtiofsd runs as root, but the path is also the user's to read.
    work = Path(tempfile.mkdtemp(prefix="hyperrun-vols-", dir="/var/tmp"))
    rw, ro = work / "rw", work / "ro"
    ro.mkdir()
    (ro / "keep.txt").write_text("original\n")
    out = vm.hyperrun("run", "-d", "--name", "vols", "--memory", "128m", "--privileged",
                      "-u", "0", "-v", f"{rw}:/data", "-v", f"{ro}:/ro:ro",
                      "-v", "appdata:/srv/data", "-v", "/anon", "--tmpfs", "/scratch:size=1m",
                      "--mount", f"type=bind,src={ro},dst=/ro2,readonly",
                      "app", "exec sleep 600")
    try:
        assert out.returncode == 0, out.stderr.decode()
        yield Vols("vols", rw, ro)
    finally:
        vm.hyperrun("rm", "-f", "-v", "vols")
        vm.hyperrun("volume", "rm", "appdata")
        shutil.rmtree(work, ignore_errors=True)


def sh(vm, vols: Vols, script: str, user: str = "0") -> str:
    return _ok(vm.hyperrun("exec", "-u", user, vols.name, "sh", "-c", script))


def test_a_missing_host_directory_is_created(vols: Vols) -> None:
    assert vols.rw.is_dir()


def test_files_pass_both_ways_intact(vm, vols: Vols) -> None:
    data = os.urandom(3 << 20)
    (vols.rw / "from-host.bin").write_bytes(data)
    got = sh(vm, vols, "sha256sum /data/from-host.bin").split()[0]
    assert got == hashlib.sha256(data).hexdigest()
    guest = sh(vm, vols, "mkdir -p /data/sub && dd if=/dev/urandom of=/data/sub/g.bin bs=64k "
                         "count=40 2>/dev/null && sha256sum /data/sub/g.bin").split()[0]
    assert hashlib.sha256((vols.rw / "sub" / "g.bin").read_bytes()).hexdigest() == guest
    # virtio-fs passes owners through: a file the guest's uid 1000 makes is uid 1000's here.
    sh(vm, vols, "touch /data/owned && chown 1000:1000 /data/owned")
    assert (os.stat(vols.rw / "owned").st_uid, os.stat(vols.rw / "owned").st_gid) == (1000, 1000)


def test_read_only_is_refused_by_the_host(vm, vols: Vols) -> None:
    for target in ("/ro", "/ro2"):
        out = vm.hyperrun("exec", "-u", "0", "vols", "sh", "-c", f"echo x > {target}/keep.txt")
        assert out.returncode != 0 and b"Read-only file system" in out.stderr
    # Even after a privileged guest lifts its own read-only flag, the host refuses.
    out = vm.hyperrun("exec", "-u", "0", "vols", "sh", "-c",
                      "mount -o remount,rw /ro && echo remounted && echo x > /ro/keep.txt")
    assert out.returncode != 0, out.stdout
    assert b"Read-only file system" in out.stderr, out.stderr
    assert (vols.ro / "keep.txt").read_text() == "original\n"
    assert sorted(p.name for p in vols.ro.iterdir()) == ["keep.txt"]


def test_a_symlink_to_etc_resolves_inside_the_guest(vm, vols: Vols) -> None:
    (vols.rw / "etc-link").symlink_to("/etc")
    listing = sh(vm, vols, "ls /data/etc-link/")
    assert "hosts" in listing and "libvirt" not in listing  # the container's /etc
    sh(vm, vols, f"echo pwned > /data/etc-link/{Path(PROBE).name}")
    assert not Path(PROBE).exists()
    assert (vols.rw / "etc-link").is_symlink()


def test_a_named_volume_starts_with_the_image_content_and_outlives_containers(
        vm, vols: Vols) -> None:
    assert sh(vm, vols, "cat /srv/data/hello.txt") == "hello from the image\n"
    sh(vm, vols, "echo kept > /srv/data/note.txt")
    before = _ok(vm.hyperrun("volume", "ls", "-q"))
    out = _ok(vm.run("-v", "appdata:/v", "-v", "/gone", "busybox", "cat", "/v/note.txt",
                     "/v/hello.txt"))
    assert out == "kept\nhello from the image\n"
    assert _ok(vm.hyperrun("volume", "ls", "-q")) == before  # --rm took /gone's volume
    used = vm.hyperrun("volume", "rm", "appdata")
    assert used.returncode != 0 and b"volume is in use" in used.stderr
    listed = json.loads(_ok(vm.hyperrun("inspect", "vols")))[0]["Mounts"]
    assert {m["Destination"] for m in listed} == {"/data", "/ro", "/ro2", "/srv/data", "/anon"}


def test_tmpfs_is_empty_and_gone_after_a_restart(vm, vols: Vols) -> None:
    assert sh(vm, vols, "ls -A /scratch; grep ' /scratch ' /proc/mounts") .startswith(
        "tmpfs /scratch tmpfs rw,nosuid,nodev")
    sh(vm, vols, "echo x > /scratch/f && echo y > /data/survives")
    _ok(vm.hyperrun("restart", "vols"))
    # The same mounts after a restart: the record carries them.
    assert sh(vm, vols, "ls -A /scratch; cat /data/survives /srv/data/note.txt") == "y\nkept\n"
    out = vm.hyperrun("exec", "-u", "0", "vols", "sh", "-c", "touch /ro/new")
    assert b"Read-only file system" in out.stderr


def test_rm_v_removes_anonymous_volumes_only(vm, vols: Vols) -> None:
    before = set(_ok(vm.hyperrun("volume", "ls", "-q")).split())
    anonymous = [m["Name"] for m in json.loads(_ok(vm.hyperrun("inspect", "vols")))[0]["Mounts"]
                 if m["Destination"] == "/anon"]
    assert anonymous and anonymous[0] in before and "appdata" in before
    _ok(vm.hyperrun("rm", "-f", "-v", "vols"))
    after = set(_ok(vm.hyperrun("volume", "ls", "-q")).split())
    assert anonymous[0] not in after and "appdata" in after
    assert (vols.rw / "survives").read_text() == "y\n"  # a bind source is the user's
