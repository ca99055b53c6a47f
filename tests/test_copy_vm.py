"""`cp` and `top` with a real VM: the agent's own busybox in a running container."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

NAME = "cp-test"
MARKER = "in-the-container:x:4242:4242::/:/bin/false"
SETUP = f"""
mkdir -p /data/dir/sub /data/empty
echo hello >/data/dir/f
echo deep >/data/dir/sub/g
chmod 0750 /data/dir/f
chmod 4755 /data/dir/sub/g
chown 1000:50 /data/dir/f
ln -s f /data/dir/rel
ln -s /etc /data/etclink
echo '{MARKER}' >>/etc/passwd
"""


def _ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


@pytest.fixture(scope="module")
def box(vm):
    """One running container for the whole module (each boot costs seconds)."""
    _ok(vm.hyperrun("run", "-d", "--name", NAME, "--memory", "128m", "busybox", "sleep", "1000"))
    try:
        _ok(vm.hyperrun("exec", NAME, "sh", "-c", SETUP))
        yield vm
    finally:
        vm.hyperrun("rm", "-f", NAME)


def _in(box, script: str) -> str:
    return _ok(box.hyperrun("exec", NAME, "sh", "-c", script))


def test_cp_a_directory_out_keeps_modes_and_with_a_owners(box, tmp_path: Path) -> None:
    # DEST missing: the directory becomes it.
    _ok(box.hyperrun("cp", "-a", f"{NAME}:/data/dir", str(tmp_path / "out")))
    out = tmp_path / "out"
    assert (out / "f").read_text() == "hello\n" and (out / "sub/g").read_text() == "deep\n"
    st = os.stat(out / "f")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o750, 1000, 50)
    # The set-uid bit never reaches the host.
    assert os.stat(out / "sub/g").st_mode & 0o7777 == 0o755
    assert os.readlink(out / "rel") == "f"
    # DEST an existing directory: into it, under the source's name; without -a, ours.
    _ok(box.hyperrun("cp", f"{NAME}:/data/dir", str(tmp_path)))
    assert (tmp_path / "dir/f").read_text() == "hello\n"
    assert os.stat(tmp_path / "dir/f").st_uid == os.geteuid()
    # A trailing /. copies the contents.
    (tmp_path / "contents").mkdir()
    _ok(box.hyperrun("cp", f"{NAME}:/data/dir/.", str(tmp_path / "contents")))
    assert sorted(os.listdir(tmp_path / "contents")) == ["f", "rel", "sub"]
    # A single file, to a new name; and as a tar stream on stdout.
    _ok(box.hyperrun("cp", f"{NAME}:/data/dir/sub/g", str(tmp_path / "g")))
    assert (tmp_path / "g").read_text() == "deep\n"
    stream = box.hyperrun("cp", f"{NAME}:/data/dir/f", "-")
    with tarfile.open(fileobj=io.BytesIO(_ok_bytes(stream))) as tar:
        assert tar.getnames() == ["f"]


def _ok_bytes(proc: subprocess.CompletedProcess[bytes]) -> bytes:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_cp_paths_resolve_inside_the_container(box, tmp_path: Path) -> None:
    _ok(box.hyperrun("cp", f"{NAME}:../../etc/passwd", str(tmp_path / "p1")))
    assert MARKER in (tmp_path / "p1").read_text()
    # /data/etclink -> /etc: the container's /etc, not the host's.
    _ok(box.hyperrun("cp", f"{NAME}:/data/etclink/passwd", str(tmp_path / "p2")))
    assert MARKER in (tmp_path / "p2").read_text()
    # The link itself is copied as a link, and one leaving the destination is left out.
    got = box.hyperrun("cp", f"{NAME}:/data/etclink", str(tmp_path / "link"))
    assert got.returncode == 0 and b"left out 1 entries" in got.stderr, got.stderr
    assert not os.path.lexists(tmp_path / "link")
    missing = box.hyperrun("cp", f"{NAME}:/no/such/file", str(tmp_path / "x"))
    assert missing.returncode == 1
    assert b"Could not find the file /no/such/file in container cp-test" in missing.stderr


def test_cp_into_the_container_keeps_modes_and_owners(box, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    (src / "a").write_text("alpha\n")
    (src / "inner/b").write_text("beta\n")
    os.chmod(src / "a", 0o741)
    os.chown(src / "a", 1234, 4321)
    # Into an existing directory, keeping owners (-a).
    _ok(box.hyperrun("cp", "-a", str(src), f"{NAME}:/data/empty"))
    assert _in(box, "cat /data/empty/src/a /data/empty/src/inner/b") == "alpha\nbeta\n"
    assert _in(box, "stat -c '%a %u:%g' /data/empty/src/a") == "741 1234:4321\n"
    # To a new name; without -a the files belong to root, as docker's.
    _ok(box.hyperrun("cp", str(src), f"{NAME}:/data/new"))
    assert _in(box, "stat -c '%a %u:%g' /data/new/a; cat /data/new/inner/b") == \
        "741 0:0\nbeta\n"
    # A single file, over an existing one; `..` stays inside the container.
    _ok(box.hyperrun("cp", str(src / "a"), f"{NAME}:../../data/dir/f"))
    assert _in(box, "cat /data/dir/f") == "alpha\n"
    # A symlink to /etc in the container is followed inside it.
    _ok(box.hyperrun("cp", str(src / "inner/b"), f"{NAME}:/data/etclink/"))
    assert _in(box, "cat /etc/b") == "beta\n"
    # A tar stream on stdin.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("streamed")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"xyz"))
    _ok(box.hyperrun("cp", "-", f"{NAME}:/data/empty", input=buf.getvalue()))
    assert _in(box, "cat /data/empty/streamed") == "xyz"
    missing = box.hyperrun("cp", str(src), f"{NAME}:/no/such/dir")
    assert missing.returncode == 1 and b"Could not find the file" in missing.stderr


def test_top_shows_the_main_process_as_pid_1_and_an_exec(box) -> None:
    _ok(box.hyperrun("exec", "-d", NAME, "sleep", "777"))
    deadline = time.monotonic() + 30
    while True:
        out = _ok(box.hyperrun("top", NAME))
        if "sleep 777" in out or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lines = out.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "STAT", "TTY", "CMD"], out
    rows = [line.split(None, 5) for line in lines[1:]]
    assert ["root", "1", "0"] == rows[0][:3] and rows[0][5] == "sleep 1000", out
    assert any(r[5] == "sleep 777" for r in rows), out
    # ps options pass through.
    assert _ok(box.hyperrun("top", NAME, "-o", "pid,comm")).splitlines()[1].split() == \
        ["1", "sleep"]


def test_top_and_cp_refuse_a_container_that_is_not_running(vm, tmp_path: Path) -> None:
    _ok(vm.hyperrun("run", "--name", "cp-done", "--memory", "128m", "busybox", "true"))
    try:
        for args in (("top", "cp-done"), ("cp", "cp-done:/etc/passwd", str(tmp_path))):
            got = vm.hyperrun(*args)
            assert got.returncode == 125, got.stderr
            assert b"container cp-done is not running" in got.stderr, got.stderr
    finally:
        vm.hyperrun("rm", "-f", "cp-done")
