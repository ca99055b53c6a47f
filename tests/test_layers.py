"""Layer unpacking: OCI semantics, and every way a hostile layer tries to escape the root."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from helpers import (
    MTIME,
    Entry,
    device,
    directory,
    fifo,
    file,
    hardlink,
    symlink,
    tar_bytes,
)

from hyperrun.errors import HostileLayer, InvalidImage
from hyperrun.images.layers import apply_layer, apply_layers


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory next to the root with a file a layer must never touch."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_text("host data")
    return path


def apply(root: Path, *entries: Entry, compress: bool = False) -> None:
    apply_layer(root, io.BytesIO(tar_bytes(*entries, compress=compress)), name="test-layer")


def hostile(root: Path, *entries: Entry) -> HostileLayer:
    with pytest.raises(HostileLayer) as info:
        apply(root, *entries)
    assert "\n" not in info.value.message
    return info.value


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_outside_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "host data"
    assert (outside / "secret").stat().st_nlink == 1


# ---- ordinary layers ---------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_unpacks_files_dirs_links_and_metadata(root: Path, compress: bool) -> None:
    apply(
        root,
        directory("etc", mode=0o750, uid=0, gid=42),
        file("etc/hosts", "127.0.0.1 localhost\n", uid=1000, gid=1001),
        file("bin/su", b"\x7fELF", mode=0o4755),
        symlink("bin/sh", "/bin/busybox"),
        hardlink("etc/hosts.bak", "etc/hosts"),
        fifo("run/fifo"),
        device("dev/null", 1, 3),
        device("dev/sda", 8, 0, kind=tarfile.BLKTYPE),
        compress=compress,
    )
    assert (root / "etc/hosts").read_text() == "127.0.0.1 localhost\n"
    st = os.lstat(root / "etc/hosts")
    assert (st.st_uid, st.st_gid, st.st_mtime) == (1000, 1001, MTIME)
    assert st.st_nlink == 2 and os.lstat(root / "etc/hosts.bak").st_ino == st.st_ino
    etc = os.lstat(root / "etc")
    assert (stat.S_IMODE(etc.st_mode), etc.st_gid, etc.st_mtime) == (0o750, 42, MTIME)
    assert stat.S_IMODE(os.lstat(root / "bin/su").st_mode) == 0o4755
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert os.lstat(root / "bin/sh").st_mtime == MTIME
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    null = os.lstat(root / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(os.lstat(root / "dev/sda").st_mode)
    # Parents missing from the layer are created 0755, as docker does.
    assert stat.S_IMODE(os.lstat(root / "run").st_mode) == 0o755


def test_absolute_names_are_made_relative(root: Path, tmp_path: Path) -> None:
    apply(root, file("/etc/motd", "hi"), file("//./usr//lib/x", "x"))
    assert (root / "etc/motd").read_text() == "hi"
    assert (root / "usr/lib/x").read_text() == "x"


def test_root_directory_entry_sets_root_metadata(root: Path) -> None:
    apply(root, directory("./", mode=0o700))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_later_layers_replace_files(root: Path) -> None:
    apply(root, file("a", "one"), directory("d"), file("d/f", "x"))
    apply(root, file("a", "two"), directory("d", mode=0o700))
    assert (root / "a").read_text() == "two"
    assert (root / "d/f").read_text() == "x"  # a directory over a directory merges
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o700


def test_file_replacing_dir_removes_the_tree(root: Path) -> None:
    apply(root, directory("x"), directory("x/y"), file("x/y/z", "deep"))
    apply(root, file("x", "now a file"))
    assert (root / "x").read_text() == "now a file"
    assert tree(root) == ["x"]


def test_dir_replacing_symlink_does_not_follow_it(root: Path, outside: Path) -> None:
    apply(root, symlink("d", str(outside)))
    apply(root, directory("d"), file("d/f", "inside"))
    assert (root / "d").is_dir() and not (root / "d").is_symlink()
    assert (root / "d/f").read_text() == "inside"
    assert_outside_untouched(outside)


def test_hardlink_to_itself_keeps_the_file(root: Path) -> None:
    apply(root, file("f", "data"))
    apply(root, hardlink("f", "f"))
    assert (root / "f").read_text() == "data"


# ---- whiteouts ---------------------------------------------------------------------------


def test_whiteout_removes_lower_files_and_trees(root: Path) -> None:
    apply(root, file("etc/a", "a"), file("etc/b", "b"), file("var/lib/x/y", "y"))
    apply(root, file("etc/.wh.a"), file("var/lib/.wh.x"), file(".wh.never-existed"))
    assert tree(root) == ["etc", "etc/b", "var", "var/lib"]


def test_whiteout_of_a_symlink_removes_the_link_not_its_target(root: Path) -> None:
    apply(root, file("target", "t"), symlink("link", "target"))
    apply(root, file(".wh.link"))
    assert tree(root) == ["target"]


def test_opaque_dir_hides_lower_layers(root: Path) -> None:
    apply(root, file("d/old"), file("d/sub/b"), file("d/sub/c"), file("other"))
    apply(root, directory("d"), file("d/.wh..wh..opq"), file("d/new", "n"),
          file("d/sub/fresh", "f"))
    assert tree(root) == ["d", "d/new", "d/sub", "d/sub/fresh", "other"]


def test_opaque_marker_after_same_layer_entries_keeps_them(root: Path) -> None:
    apply(root, file("d/old"), file("d/sub/b"))
    # The marker comes last; entries of its own layer survive regardless of order.
    apply(root, directory("d"), file("d/new", "n"), file("d/sub/fresh", "f"),
          file("d/.wh..wh..opq"))
    assert tree(root) == ["d", "d/new", "d/sub", "d/sub/fresh"]
    assert (root / "d/new").read_text() == "n"


def test_opaque_root(root: Path) -> None:
    apply(root, file("a"), file("b/c"))
    apply(root, file("keep", "k"), file(".wh..wh..opq"))
    assert tree(root) == ["keep"]


def test_whiteout_through_symlinked_parent_stays_inside(root: Path, outside: Path) -> None:
    apply(root, file(f"{outside}/secret", "root copy"), file("data/keep", "k"))
    apply(root, symlink("lnk", str(outside)), symlink("rel", "../../../../data"))
    apply(root, file("lnk/.wh.secret"), file("rel/.wh.keep"))
    # The absolute link resolved within the root: its copy went, the host file stayed.
    assert not (root / str(outside).lstrip("/") / "secret").exists()
    assert not (root / "data/keep").exists()
    assert_outside_untouched(outside)


def test_opaque_through_symlinked_parent_stays_inside(root: Path, outside: Path) -> None:
    apply(root, symlink("lnk", str(outside)))
    apply(root, file("lnk/.wh..wh..opq"))
    assert_outside_untouched(outside)


@pytest.mark.parametrize(
    "name",
    [".wh.", "d/.wh.", ".wh..", "d/.wh..", ".wh...", "d/.wh...", ".wh..wh.", ".wh..wh.plnk",
     "d/.wh..wh..opqx"],
)
def test_malformed_whiteouts_are_rejected(root: Path, tmp_path: Path, name: str) -> None:
    apply(root, file("d/f", "keep"))
    err = hostile(root, file(name))
    assert "whiteout" in err.message
    assert (root / "d/f").read_text() == "keep"
    assert (tmp_path / "root").is_dir()


# ---- escapes -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "a/..", "..", "./../evil",
                                  "/../evil", "a/b/../../../evil"])
def test_dotdot_entries_are_rejected(root: Path, tmp_path: Path, name: str) -> None:
    err = hostile(root, file(name, "pwned"))
    assert "'..'" in err.message
    assert not (tmp_path / "evil").exists()
    assert tree(root) == []


def test_dotdot_symlink_and_hardlink_names_are_rejected(root: Path, tmp_path: Path) -> None:
    hostile(root, symlink("../evil", "/"))
    hostile(root, hardlink("../evil", "x"))
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("separate_layers", [False, True])
def test_write_through_absolute_symlink_is_confined(root: Path, outside: Path,
                                                    separate_layers: bool) -> None:
    link = symlink("escape", str(outside))
    write = file("escape/secret", "pwned")
    if separate_layers:
        apply(root, link)
        apply(root, write)
    else:
        apply(root, link, write)
    assert_outside_untouched(outside)
    assert (root / str(outside).lstrip("/") / "secret").read_text() == "pwned"


def test_write_through_relative_symlink_is_confined(root: Path, tmp_path: Path) -> None:
    apply(root, symlink("up", "../../../../../../.."), file("up/pwned", "x"),
          symlink("a/b", "../../.."), file("a/b/also", "y"))
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "also").exists()
    assert (root / "pwned").read_text() == "x"
    assert (root / "also").read_text() == "y"


def test_symlink_chain_to_root_is_confined(root: Path, tmp_path: Path) -> None:
    apply(root, symlink("a", "/b/../c"), symlink("c", "/../../d"), symlink("d", ".."),
          file("a/x", "x"))
    assert (root / "x").read_text() == "x"
    assert not (tmp_path / "x").exists()


def test_final_symlink_is_replaced_not_followed(root: Path, outside: Path) -> None:
    apply(root, symlink("etc/passwd", str(outside / "secret")))
    apply(root, file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"))
    assert not (root / "etc/passwd").is_symlink()
    assert (root / "etc/passwd").read_text().startswith("root:")
    assert_outside_untouched(outside)


def test_final_symlink_to_dir_is_replaced_for_every_type(root: Path, outside: Path) -> None:
    for entry in (fifo("x"), device("x", 1, 3), symlink("x", "y"), hardlink("x", "f")):
        apply(root, file("f", "f"), symlink("x", str(outside)))
        apply(root, entry)
        assert not (root / "x").is_dir()
    assert_outside_untouched(outside)


@pytest.mark.parametrize("target", ["OUTSIDE", "/etc/passwd", "../outside/secret",
                                    "a/../../outside/secret", "missing"])
def test_hardlink_outside_is_rejected(root: Path, outside: Path, target: str) -> None:
    target = target.replace("OUTSIDE", str(outside / "secret"))
    hostile(root, hardlink("stolen", target))
    assert_outside_untouched(outside)
    assert not (root / "stolen").exists()


def test_hardlink_through_symlinked_parent_is_confined(root: Path, outside: Path) -> None:
    hostile(root, symlink("lnk", str(outside)), hardlink("stolen", "lnk/secret"))
    assert_outside_untouched(outside)


def test_absolute_hardlink_target_is_relative_to_root(root: Path) -> None:
    apply(root, file("etc/passwd", "inside"), hardlink("copy", "/etc/passwd"))
    assert (root / "copy").read_text() == "inside"
    assert (root / "copy").stat().st_ino == (root / "etc/passwd").stat().st_ino


@pytest.mark.parametrize("target", ["d", "d/", ".", "./", "/", "lnk"])
def test_hardlink_to_dir_or_symlink_is_rejected(root: Path, target: str) -> None:
    apply(root, directory("d"), symlink("lnk", "d"))
    err = hostile(root, hardlink("h", target))
    assert "hard link" in err.message
    assert not os.path.lexists(root / "h")


@pytest.mark.parametrize("entry", [
    symlink(".", "/etc"), symlink("./", "/etc"), symlink("", "/etc"), symlink("/", "/etc"),
    file("./", "x"), file(".", "x"), file("/", "x"), hardlink(".", "f"), fifo("."),
    device("./", 1, 3),
])
def test_non_directory_replacing_the_root_is_rejected(root: Path, entry: Entry) -> None:
    apply(root, file("f", "f"))
    err = hostile(root, entry)
    assert "root" in err.message
    assert root.is_dir() and not root.is_symlink()
    assert (root / "f").read_text() == "f"


@pytest.mark.parametrize(("major", "minor"), [(4096, 0), (0, 1 << 20), (1 << 31, 1),
                                              (2**40, 2**40)])
def test_absurd_device_numbers_are_rejected(root: Path, major: int, minor: int) -> None:
    err = hostile(root, device("dev/evil", major, minor))
    assert "device" in err.message
    assert not (root / "dev/evil").exists()


def test_absurd_owner_is_rejected(root: Path) -> None:
    hostile(root, file("f", uid=2**32))


def test_symlink_loops_are_rejected(root: Path) -> None:
    err = hostile(root, symlink("a", "b"), symlink("b", "a"), file("a/x"))
    assert "symbolic links" in err.message


def test_file_below_a_file_is_rejected(root: Path) -> None:
    err = hostile(root, file("f", "x"), file("f/g", "y"))
    assert "not a directory" in err.message


def test_unsupported_entry_types_are_rejected(root: Path) -> None:
    hostile(root, Entry("weird", b"Z"))


def test_not_a_tar_is_invalid(root: Path) -> None:
    with pytest.raises(InvalidImage, match="not a readable tar"):
        apply_layer(root, io.BytesIO(b"\x1f\x8b" + b"garbage" * 100), name="bad")
    for compress in (False, True):
        truncated = tar_bytes(file("big", os.urandom(100_000)), compress=compress)[:50_000]
        with pytest.raises(InvalidImage, match="unexpected end of data"):
            apply_layer(root, io.BytesIO(truncated), name="truncated")


# ---- layer files as base disks read them: gzip inflated on a second thread ------------------


def _layer_file(tmp_path: Path, data: bytes, name: str = "layer") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_gzip_layer_files_apply_in_order(root: Path, tmp_path: Path) -> None:
    first = _layer_file(tmp_path, gzip.compress(tar_bytes(file("a", "1"), file("b", "2"))), "l1")
    second = _layer_file(tmp_path, tar_bytes(file(".wh.b"), file("c", "3")), "l2")
    apply_layers(root, [("l1", first), ("l2", second)])
    assert tree(root) == ["a", "c"]


def test_gzip_with_several_members(root: Path, tmp_path: Path) -> None:
    data = tar_bytes(file("big", os.urandom(300_000)), file("small", "x"))
    cut = len(data) // 2
    layer = _layer_file(tmp_path, gzip.compress(data[:cut]) + gzip.compress(data[cut:]))
    apply_layers(root, [("multi", layer)])
    assert (root / "small").read_text() == "x" and (root / "big").stat().st_size == 300_000


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_broken_gzip_layer_file_is_refused(root: Path, tmp_path: Path, damage: str) -> None:
    packed = gzip.compress(tar_bytes(file("big", os.urandom(300_000))))
    if damage == "truncated":
        packed = packed[: len(packed) // 2]
    else:
        packed = packed[:100] + b"\xff" * 200 + packed[300:]
    with pytest.raises(InvalidImage, match="layer bad"):
        apply_layers(root, [("bad", _layer_file(tmp_path, packed))])
