"""`cp` without a VM: argument parsing, docker's destination rules, hostile tar streams."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from hyperrun.cli.copy import Endpoint, parse_args, parse_endpoint
from hyperrun.containers import top
from hyperrun.containers.copy import (
    CopyError,
    Extractor,
    HostileCopy,
    Mode,
    container_source,
    host_destination,
)
from hyperrun.errors import InvalidImage, UsageError


@pytest.mark.parametrize(("arg", "want"), [
    ("c:/etc/passwd", Endpoint("/etc/passwd", "c")),
    ("c:relative", Endpoint("relative", "c")),
    ("c:", Endpoint("", "c")),
    ("/abs/with:colon", Endpoint("/abs/with:colon")),
    ("./with:colon", Endpoint("./with:colon")),
    ("plain", Endpoint("plain")),
    (":odd", Endpoint(":odd")),
    ("-", Endpoint("-")),
])
def test_endpoints_follow_docker(arg: str, want: Endpoint) -> None:
    assert parse_endpoint(arg) == want


@pytest.mark.parametrize(("src", "dest", "message"), [
    ("a:/x", "b:/y", "copying between containers is not supported"),
    ("/x", "./y", "must specify at least one container source"),
    ("c:", "/tmp", "no path given after c:"),
])
def test_bad_arguments_are_usage_errors(src: str, dest: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_args(src, dest)
    assert info.value.status == 125


@pytest.mark.parametrize(("path", "want"), [
    ("/etc/passwd", ("/etc", "passwd")),
    ("../../etc/passwd", ("/etc", "passwd")),
    ("etc/", ("/", "etc")),
    ("/data/dir/.", ("/data/dir", ".")),
    ("/", ("/", ".")),
    ("/..", ("/", ".")),
])
def test_container_sources_stay_under_the_root(path: str, want: tuple[str, str]) -> None:
    assert container_source(path) == want


def test_host_destinations(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert host_destination(str(tmp_path), "dir") is Mode.INTO
    assert host_destination(str(tmp_path / "new"), "dir") is Mode.AS
    assert host_destination(str(tmp_path / "file"), "f") is Mode.AS
    assert host_destination(str(tmp_path), ".") is Mode.INTO
    with pytest.raises(CopyError, match="does not exist"):
        host_destination(str(tmp_path / "no/such"), "f")
    with pytest.raises(CopyError, match="cannot copy a directory to the file"):
        host_destination(str(tmp_path / "file"), ".")


def test_parse_ps_keeps_spaces_in_the_command() -> None:
    rows = top.parse_ps("USER PID COMMAND\nroot 1 sleep 1000\nroot 7 sh -c a  b\n")
    assert rows == [["UID", "PID", "CMD"], ["root", "1", "sleep 1000"],
                    ["root", "7", "sh -c a  b"]]


# --- extracting what the guest sends -------------------------------------------------------


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    return buf


def _m(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "",
       data: bytes = b"") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info, data


def _dir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes]:
    return _m(name, tarfile.DIRTYPE, mode)


def test_a_directory_lands_as_dest_with_modes_and_without_setuid(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    ex = Extractor(str(dest), "d", Mode.AS, keep_owner=False)
    ex.extract(_tar(_dir("d", 0o750), _m("d/f", data=b"hi", mode=0o4755),
                    _m("d/link", tarfile.SYMTYPE, link="f"),
                    _m("d/hard", tarfile.LNKTYPE, link="d/f"),
                    _dir("d/ro", 0o555), _m("d/ro/x", data=b"x")))
    assert (dest / "f").read_bytes() == b"hi" and (dest / "ro/x").read_bytes() == b"x"
    assert stat.S_IMODE(os.stat(dest / "f").st_mode) == 0o755  # set-uid dropped
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(dest / "ro").st_mode) == 0o555
    assert os.readlink(dest / "link") == "f"
    assert os.stat(dest / "hard").st_ino == os.stat(dest / "f").st_ino


@pytest.mark.parametrize(("members", "why"), [
    ([_m("d/../../escape", data=b"x")], "contains '..'"),
    ([_m("/etc/evil", data=b"x")], "has an absolute name"),
    ([_m("other/f", data=b"x")], "is not inside 'd'"),
    ([_dir("d"), _m("d/h", tarfile.LNKTYPE, link="/etc/passwd")], "an absolute name"),
    ([_dir("d"), _m("d/h", tarfile.LNKTYPE, link="d/../../x")], "contains '..'"),
    ([_dir("d"), _m("d/h", tarfile.LNKTYPE, link="d/missing")], "a hard link to missing"),
    ([_dir("d"), _m("d/s", b"Z")], "unsupported tar type"),
])
def test_hostile_members_are_refused(tmp_path: Path, members, why: str) -> None:
    (tmp_path / "dest").mkdir()
    ex = Extractor(str(tmp_path / "dest"), "d", Mode.INTO, keep_owner=False)
    with pytest.raises(HostileCopy, match=why):
        ex.extract(_tar(*members))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]


def test_links_leaving_dest_and_devices_are_left_out(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    outside.mkdir()
    ex = Extractor(str(dest), "d", Mode.AS, keep_owner=False)
    ex.extract(_tar(_dir("d"), _m("d/abs", tarfile.SYMTYPE, link=str(outside)),
                    _m("d/up", tarfile.SYMTYPE, link="../outside"),
                    _m("d/abs/x", data=b"through the link"),
                    _m("d/up/y", data=b"through the link"),
                    _m("d/null", tarfile.CHRTYPE)))
    assert len(ex.skipped) == 3 and "a device" in ex.skipped[2]
    assert list(outside.iterdir()) == []
    # The names became plain directories inside dest.
    assert (dest / "abs/x").read_bytes() == b"through the link"
    assert not os.path.lexists(dest / "null")


def test_a_symlink_already_in_dest_is_resolved_inside_it(tmp_path: Path) -> None:
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "d").symlink_to(outside)  # absolute: taken as relative to dest
    Extractor(str(dest), "d", Mode.INTO, keep_owner=False).extract(
        _tar(_m("d/x", data=b"x")))
    assert list(outside.iterdir()) == []
    assert (dest / str(outside).lstrip("/") / "x").read_bytes() == b"x"


def test_a_single_file_becomes_dest_and_nothing_may_follow(tmp_path: Path) -> None:
    Extractor(str(tmp_path / "f"), "f", Mode.AS, keep_owner=False).extract(
        _tar(_m("f", data=b"one", mode=0o600)))
    assert (tmp_path / "f").read_bytes() == b"one"
    ex = Extractor(str(tmp_path / "g"), "g", Mode.AS, keep_owner=False)
    with pytest.raises(HostileCopy, match="follows a single file"):
        ex.extract(_tar(_m("g", data=b"x"), _m("g", data=b"y")))


def test_a_directory_never_replaces_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("keep")
    ex = Extractor(str(tmp_path / "f"), "d", Mode.AS, keep_owner=False)
    with pytest.raises(CopyError, match="cannot copy a directory to the file"):
        ex.extract(_tar(_dir("d")))
    assert (tmp_path / "f").read_text() == "keep"


def test_the_stream_is_bounded(tmp_path: Path) -> None:
    ex = Extractor(str(tmp_path / "big"), "big", Mode.AS, keep_owner=False, limit=1 << 16)
    with pytest.raises(CopyError, match="larger than"):
        ex.extract(_tar(_m("big", data=b"\0" * (1 << 17))))


def test_malformed_headers_are_refused_by_tarsafe(tmp_path: Path) -> None:
    info = tarfile.TarInfo("d")
    info.type = tarfile.XHDTYPE
    raw = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    size = f"{1 << 30:011o}".encode() + b"\0"
    raw[124:136] = size
    raw[148:156] = b" " * 8
    raw[148:155] = f"{sum(raw):06o}\0".encode()
    ex = Extractor(str(tmp_path / "x"), "d", Mode.AS, keep_owner=False)
    with pytest.raises(InvalidImage, match="refusing a tar archive"):
        ex.extract(io.BytesIO(bytes(raw) + b"\0" * 1024))
