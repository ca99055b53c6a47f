"""Hostile images: tar headers tarfile would buffer or choke on, symlinked blobs, deep
JSON, leftovers of killed loads, one validator for load and pull, long names in messages.
Each is refused with a one-line error (or handled), never a traceback, leaving nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from helpers import (
    ImageSpec,
    directory,
    file,
    oci_layout_files,
    sha256,
    tar_bytes,
    write_dir,
    write_tar,
)
from hostile import (
    LAYER_GZIP,
    LAYER_TAR,
    OCI_INDEX,
    OCI_MANIFEST,
    REPO,
    MiB,
    build,
    config_for,
    end,
    gzip_bomb,
    header,
    hyperrun,
    image_layout,
    layer_images,
    layout,
    leftovers,
    manifest_for,
    one_line_error,
    pad,
    pax,
)

from hyperrun.errors import HostileLayer, InvalidImage
from hyperrun.images import manifest as documents
from hyperrun.images.layers import apply_layers
from hyperrun.images.load import Loader
from hyperrun.images.store import ImageStore
from hyperrun.store import Store

# ---- 2. tar headers that tarfile would buffer whole -----------------------------------------


@pytest.mark.parametrize("type_", [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
                                   tarfile.GNUTYPE_LONGLINK])
def test_huge_special_header_is_refused_before_it_is_read(tmp_path: Path, type_: bytes) -> None:
    layer = header("././@Special", type_, 3 << 30) + b"\0" * (4 * MiB) + end()
    images, rootfs = layer_images(tmp_path, layer)
    with pytest.raises(InvalidImage, match=r"header of 3221225472 bytes \(at most 1048576\)"):
        build(images, rootfs)


def test_huge_pax_header_in_the_outer_archive(images: ImageStore, tmp_path: Path) -> None:
    path = tmp_path / "save.tar"
    path.write_bytes(header("././@PaxHeader", tarfile.XHDTYPE, 3 << 30) + b"\0" * MiB + end())
    with pytest.raises(InvalidImage, match="PAX header of 3221225472 bytes"):
        Loader(images).load(path)


def test_huge_pax_header_in_an_import(tmp_path: Path) -> None:
    path = tmp_path / "rootfs.tar"
    path.write_bytes(header("././@PaxHeader", tarfile.XHDTYPE, 3 << 30) + b"\0" * MiB + end())
    proc = hyperrun(tmp_path / "store", "import", str(path))
    one_line_error(proc, "PAX header of 3221225472 bytes")


def test_pax_header_of_digits_is_refused_quickly(tmp_path: Path) -> None:
    """Python 3.11's PAX parser is quadratic in runs of digits (CVE-2024-6232)."""
    body = b"9" * (256 << 10) + b" "
    layer = header("././@PaxHeader", tarfile.XHDTYPE, len(body)) + pad(body) + header("f") + end()
    images, rootfs = layer_images(tmp_path, layer)
    started = time.monotonic()
    with pytest.raises(InvalidImage, match="digits in a row"):
        build(images, rootfs)
    assert time.monotonic() - started < 5


def test_endless_chain_of_long_names_is_refused(tmp_path: Path) -> None:
    name = pad(b"a" * 200 + b"\0")
    chain = b"".join(header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 201) + name
                     for _ in range(5000))
    images, rootfs = layer_images(tmp_path, chain + header("f") + end())
    with pytest.raises(InvalidImage, match="extended headers in a row"):
        build(images, rootfs)


def test_nul_in_a_pax_path_is_a_hostile_layer(tmp_path: Path) -> None:
    layer = pax({"path": b"etc/pass\0wd"}) + header("placeholder", size=3) + pad(b"abc") + end()
    images, rootfs = layer_images(tmp_path, layer)
    with pytest.raises(HostileLayer, match="NUL byte"):
        build(images, rootfs)


@pytest.mark.parametrize("records", [{"size": "-4096"}, {"GNU.sparse.size": "x"},
                                     {"path": b"\xff\xfe" * 10 + b"\0"}])
def test_odd_pax_records_are_invalid_images(tmp_path: Path, records: dict[str, str]) -> None:
    layer = pax(records) + header("f", size=3) + pad(b"abc") + header("g") + end()
    images, rootfs = layer_images(tmp_path, layer)
    with pytest.raises(InvalidImage):
        build(images, rootfs)


def test_endless_gnu_sparse_map_is_refused(tmp_path: Path) -> None:
    sparse = bytearray(header("sparse", tarfile.GNUTYPE_SPARSE, 0))
    sparse[482] = 1  # isextended: extension blocks follow
    sparse[483:495] = b"%011o\0" % 4096  # realsize
    sparse[148:156] = b"        "
    sparse[148:155] = b"%06o\0" % sum(sparse)
    ext = bytearray(512)
    for i in range(21):
        ext[i * 24:i * 24 + 24] = b"%011o\0%011o\0" % (i * 2, 1)
    ext[504] = 1
    layer = bytes(sparse) + bytes(ext) * 5000 + end()
    images, rootfs = layer_images(tmp_path, layer)
    with pytest.raises(InvalidImage, match="sparse file of more than"):
        build(images, rootfs)


def test_pax_sparse_map_with_endless_regions_is_refused(tmp_path: Path) -> None:
    records = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "f",
               "GNU.sparse.realsize": "4096"}
    layer = pax(records) + header("GNUSparseFile.0/f", size=512) + pad(b"99999999\n") + end()
    images, rootfs = layer_images(tmp_path, layer)
    with pytest.raises(InvalidImage, match="sparse map of 99999999 regions"):
        build(images, rootfs)


@pytest.mark.parametrize("how", [["--format=gnu"], ["--format=pax", "--sparse-version=0.0"],
                                 ["--format=pax", "--sparse-version=0.1"],
                                 ["--format=pax", "--sparse-version=1.0"]])
def test_genuine_sparse_files_still_unpack(tmp_path: Path, how: list[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as fh:
        fh.seek(5 * MiB)
        fh.write(b"hello")
        fh.truncate(8 * MiB)
    subprocess.run(["tar", "--sparse", *how, "-C", str(src), "-cf", str(tmp_path / "l.tar"),
                    "sparse"], check=True)
    (tmp_path / "root").mkdir()
    apply_layers(tmp_path / "root", [("l", tmp_path / "l.tar")])
    assert (tmp_path / "root/sparse").read_bytes() == (src / "sparse").read_bytes()


# ---- 5. OCI layout blobs must be regular files inside the layout ----------------------------


def test_blob_symlinked_to_a_host_file_is_not_read(images: ImageStore, tmp_path: Path) -> None:
    spec = ImageSpec([tar_bytes(file("a", "a"))])
    root = write_dir(oci_layout_files([(spec, "linked:1")]), tmp_path / "layout")
    config = root / "blobs/sha256" / sha256(spec.config_bytes()).removeprefix("sha256:")
    secret = tmp_path / "outside.json"  # a host file the attacker knows the content of
    secret.write_bytes(config.read_bytes())
    config.unlink()
    config.symlink_to(secret)
    with pytest.raises(InvalidImage, match="not a regular file"):
        Loader(images).load(root)
    assert images.list() == []


def test_blob_directory_symlinked_out_of_the_layout(images: ImageStore, tmp_path: Path) -> None:
    spec = ImageSpec([tar_bytes(file("a", "a"))])
    root = write_dir(oci_layout_files([(spec, "linked:1")]), tmp_path / "layout")
    (root / "blobs").rename(tmp_path / "elsewhere")
    (root / "blobs").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidImage, match="not a regular file"):
        Loader(images).load(root)


def test_fifo_blob_does_not_hang(images: ImageStore, tmp_path: Path) -> None:
    spec = ImageSpec([tar_bytes(file("a", "a"))])
    root = write_dir(oci_layout_files([(spec, "fifo:1")]), tmp_path / "layout")
    config = root / "blobs/sha256" / sha256(spec.config_bytes()).removeprefix("sha256:")
    config.unlink()
    os.mkfifo(config)
    signal.alarm(20)  # a hang fails the test instead of blocking the run
    try:
        with pytest.raises(InvalidImage, match="not a regular file"):
            Loader(images).load(root)
    finally:
        signal.alarm(0)


# ---- 6. deep JSON -----------------------------------------------------------------------------


def test_deeply_nested_json_in_a_load(images: ImageStore, tmp_path: Path) -> None:
    path = write_tar({"manifest.json": b"[" * 100_000 + b"]" * 100_000}, tmp_path / "save.tar")
    with pytest.raises(InvalidImage, match="nested too deeply"):
        Loader(images).load(path)


def test_deeply_nested_json_from_a_registry() -> None:
    with pytest.raises(InvalidImage, match="nested too deeply"):
        documents.parse(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, OCI_MANIFEST, "img")


def test_deeply_nested_json_is_one_cli_line(tmp_path: Path) -> None:
    path = write_tar({"manifest.json": b"[" * 100_000}, tmp_path / "save.tar")
    one_line_error(hyperrun(tmp_path / "store", "load", "-i", str(path)), "nested too deeply")


# ---- 7. leftovers of killed commands are swept ----------------------------------------------


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def wait_for(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_killed_stdin_load_is_swept_by_the_next_load(tmp_path: Path) -> None:
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "load"], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "HYPERRUN_ROOT": str(root)})
    assert proc.stdin is not None
    proc.stdin.write(b"\0" * MiB)  # half an archive; the load waits for the rest
    proc.stdin.flush()
    wait_for(lambda: (root / "tmp").exists() and any((root / "tmp").glob("stdin-*")))
    proc.kill()
    proc.wait()
    proc.stdin.close()
    assert [p.name.startswith(f"stdin-{proc.pid}-") for p in (root / "tmp").iterdir()] == [True]
    spec = ImageSpec([tar_bytes(file("a", "a"))])
    archive = write_tar(oci_layout_files([(spec, "ok:1")]), tmp_path / "ok.tar")
    again = subprocess.run([sys.executable, "-m", "hyperrun", "load"], cwd=REPO,
                           input=archive.read_bytes(), capture_output=True,
                           env={**os.environ, "HYPERRUN_ROOT": str(root)})
    assert again.returncode == 0, again.stderr
    assert leftovers(Store(root)) == []


def test_killed_load_is_swept_by_the_next_load(tmp_path: Path) -> None:
    blob = tmp_path / "bomb.gz"
    _, diff_id = gzip_bomb(blob, 1 << 30)  # inflating it takes a while
    path = image_layout(tmp_path / "layout", [(blob, LAYER_GZIP, diff_id)])
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "load", "-i", str(path)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HYPERRUN_ROOT": str(root)})
    wait_for(lambda: any(p.is_file() for p in (root / "tmp").glob("load-*/*")))
    proc.kill()
    proc.wait()
    assert [p.name for p in (root / "tmp").glob(f"load-{proc.pid}-*")] != []
    spec = ImageSpec([tar_bytes(file("a", "a"))])
    ok = write_dir(oci_layout_files([(spec, "ok:1")]), tmp_path / "ok")
    assert hyperrun(root, "load", "-i", str(ok)).returncode == 0
    assert leftovers(Store(root)) == []


def test_dead_disk_build_and_staging_are_swept_by_the_next_build(images: ImageStore,
                                                                 tmp_path: Path) -> None:
    spec = ImageSpec([tar_bytes(directory("etc"), file("etc/hostname", "x\n"))])
    Loader(images).load(write_dir(oci_layout_files([(spec, "disk:1")]), tmp_path / "l"))
    store = images.store
    store.disks.mkdir(parents=True, exist_ok=True)
    pid = dead_pid()
    stale_disk = store.disks / f".building-{pid}-abc123.tmp"
    stale_disk.write_bytes(b"\0" * 4096)
    stale_tree = store.tmp / f"rootfs-{pid}-xyz"
    (stale_tree / "rootfs/etc").mkdir(parents=True)
    live_disk = store.disks / f".building-{os.getpid()}-live.tmp"
    live_disk.write_bytes(b"")
    images.base_disk(images.get("disk:1"))
    assert not stale_disk.exists() and not stale_tree.exists()
    assert live_disk.exists()  # its owner (this process) still runs


def test_killed_disk_build_leaves_an_owned_name(images: ImageStore, tmp_path: Path) -> None:
    spec = ImageSpec([tar_bytes(directory("etc"), file("etc/hostname", "x\n"))])
    Loader(images).load(write_dir(oci_layout_files([(spec, "disk:1")]), tmp_path / "l"))
    script = ("import os, sys\nfrom pathlib import Path\nfrom hyperrun import subproc\n"
              "from hyperrun.images.store import ImageStore\nfrom hyperrun.store import Store\n"
              "def die(argv, **kw):\n    os.kill(os.getpid(), 9)\n"
              "subproc.run = die\n"
              "images = ImageStore(Store(Path(sys.argv[1])))\n"
              "images.base_disk(images.get('disk:1'))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(images.store.root)], cwd=REPO,
                          env={**os.environ, "HYPERRUN_STAGING": "disk"})
    assert proc.returncode == -9
    left = [p.name for p in images.store.disks.iterdir()]
    assert len(left) == 1 and left[0].startswith(".building-"), left
    images.base_disk(images.get("disk:1"))
    assert [p.name for p in images.store.disks.iterdir()] == [
        images.get("disk:1").id.removeprefix("sha256:") + ".ext4"]
    assert leftovers(images.store) == []


# ---- 8. load and pull validate documents alike ----------------------------------------------


def test_bool_size_is_refused_by_load_and_pull(images: ImageStore, tmp_path: Path) -> None:
    layer = tar_bytes(file("a", "a"))
    config = config_for([sha256(layer)])
    manifest = json.loads(manifest_for(config, [(layer, LAYER_TAR)]))
    manifest["layers"][0]["size"] = True if len(layer) == 1 else manifest["layers"][0]["size"]
    manifest["config"]["size"] = True
    body = json.dumps(manifest).encode()
    with pytest.raises(InvalidImage, match="malformed descriptor") as pulled:
        documents.parse(body, OCI_MANIFEST, "img")
    desc = {"mediaType": OCI_MANIFEST, "digest": sha256(body), "size": len(body)}
    path = layout(tmp_path / "layout", [desc], [config, body, layer])
    with pytest.raises(InvalidImage, match="malformed descriptor") as loaded:
        Loader(images).load(path)
    assert pulled.value.hint == loaded.value.hint


def test_index_nesting_limit_is_the_same_for_load_and_pull(images: ImageStore,
                                                           tmp_path: Path) -> None:
    layer = tar_bytes(file("a", "a"))
    config = config_for([sha256(layer)])
    manifest = manifest_for(config, [(layer, LAYER_TAR)])
    blobs: list[bytes | Path] = [config, manifest, layer]
    target = {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
              "platform": {"os": "linux", "architecture": "amd64"}}
    for _ in range(documents.MAX_INDEX_DEPTH):  # index.json is one more on top
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": [target]}).encode()
        blobs.append(index)
        target = {"mediaType": OCI_INDEX, "digest": sha256(index), "size": len(index),
                  "platform": {"os": "linux", "architecture": "amd64"}}
    path = layout(tmp_path / "deep", [target], blobs)
    with pytest.raises(InvalidImage, match="nested too deeply"):
        Loader(images).load(path)
    with pytest.raises(InvalidImage, match="nested too deeply"):
        documents.check_depth(documents.MAX_INDEX_DEPTH + 1, "img")
    shallow = layout(tmp_path / "shallow", [json.loads(blobs[-1])["manifests"][0]], blobs)
    assert Loader(images).load(shallow)[0].image.layers[0].digest == sha256(layer)


# ---- 9. strings from the archive are shortened in messages ----------------------------------


def test_long_hostile_entry_name_is_shortened(tmp_path: Path) -> None:
    name = "../" + "x" * 5000
    layer = pax({"path": name}) + header("placeholder") + end()
    images, rootfs = layer_images(tmp_path, layer)
    with pytest.raises(HostileLayer) as err:
        build(images, rootfs)
    assert len(err.value.message) < 400


def test_stdin_load_is_bounded_by_the_image_size_limit(tmp_path: Path) -> None:
    """`hyperrun load < /dev/zero` stops at the image size limit with one line."""
    root = tmp_path / "store"
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run([sys.executable, "-m", "hyperrun", "load"], cwd=REPO,
                              stdin=zero, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "HYPERRUN_ROOT": str(root),
                                   "HYPERRUN_MAX_IMAGE_SIZE": "8m"})
    assert proc.returncode == 125
    assert proc.stderr.count("\n") == 1 and "larger than the 8 MiB limit" in proc.stderr
    assert leftovers(Store(root)) == []
