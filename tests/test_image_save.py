"""`hyperrun save`: docker-save archives that hyperrun and skopeo (as docker would) read back."""

from __future__ import annotations

import errno
import json
import os
import pty
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers import ImageSpec, docker_save_files, hexof, oci_layout_files, write_dir, write_tar
from verbs import BASE, TOP, Cli, Result, cli_fixture, debugfs, hyperrun, one_error  # noqa: F401

from hyperrun.images import save as save_module
from hyperrun.images.store import ImageStore
from hyperrun.store import Store

GZ = ImageSpec(layers=[BASE, TOP], config={"Cmd": ["gz"]})  # layers stored gzip-compressed
PLAIN = ImageSpec(layers=[BASE], config={"Cmd": ["plain"]}, compress=False)
LOOSE = ImageSpec(layers=[TOP], config={"Cmd": ["loose"]})  # untagged


@pytest.fixture
def loaded(cli: Cli, store: Store, tmp_path: Path) -> ImageStore:
    layout = oci_layout_files([(GZ, "app:1"), (GZ, "app:2"), (PLAIN, "registry.local:5000/x:y"),
                               (LOOSE, None)])
    assert cli("load", "-q", "-i", str(write_dir(layout, tmp_path / "layout"))).status == 0
    return ImageStore(store)


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def state(images: ImageStore) -> dict[str, list[str]]:
    return {image.id: sorted(r.familiar for r in image.references) for image in images.list()}


def test_round_trip_keeps_ids_tags_and_disks(cli: Cli, loaded: ImageStore,
                                             tmp_path: Path) -> None:
    before = state(loaded)
    disk_before = debugfs(loaded.base_disk(loaded.get("app:1")), "cat /etc/x")
    archive = tmp_path / "out" / "images.tar"
    archive.parent.mkdir()
    loose = hexof(LOOSE.id)[:12]
    assert cli("save", "-o", str(archive), "app", "registry.local:5000/x:y", loose) == \
        Result(0, "", "")
    assert os.listdir(archive.parent) == ["images.tar"]  # no temporary left beside it
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    files = members(archive)
    store = loaded.store
    for image in loaded.list():  # blobs exactly as stored: configs, manifests, layers
        for digest in (image.id, image.manifest_digest, *(la.digest for la in image.layers)):
            assert files["blobs/sha256/" + hexof(digest)] == store.blob(digest).read_bytes()
    manifest = json.loads(files["manifest.json"])
    assert [(m["Config"], m["RepoTags"]) for m in manifest] == [
        ("blobs/sha256/" + hexof(GZ.id), ["app:1", "app:2"]),
        ("blobs/sha256/" + hexof(PLAIN.id), ["registry.local:5000/x:y"]),
        ("blobs/sha256/" + hexof(LOOSE.id), None)]
    index = json.loads(files["index.json"])
    names = [d.get("annotations", {}).get("io.containerd.image.name") for d in index["manifests"]]
    assert names == ["docker.io/library/app:1", "docker.io/library/app:2",
                     "registry.local:5000/x:y", None]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    assert set(json.loads(files["repositories"])) == {"app", "registry.local:5000/x"}

    for image_id in before:
        cli("rmi", "-f", image_id)
    assert loaded.list() == [] and os.listdir(store.blobs) == []
    assert cli("load", "-i", str(archive)).status == 0
    assert state(loaded) == before
    assert debugfs(loaded.base_disk(loaded.get("app:1")), "cat /etc/x") == disk_before
    layers = loaded.get("app:1").layers
    assert {la.media_type for la in layers} == {"application/vnd.oci.image.layer.v1.tar+gzip"}


def test_save_to_standard_output_and_not_to_a_terminal(loaded: ImageStore,
                                                       tmp_path: Path) -> None:
    store = loaded.store
    out = tmp_path / "piped.tar"
    with open(out, "wb") as fh:
        proc = hyperrun(store, "save", "app:1", stdout=fh)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(members(out)["manifest.json"])[0]["RepoTags"] == ["app:1"]
    primary, secondary = pty.openpty()
    try:
        proc = hyperrun(store, "save", "app:1", stdout=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 125
    assert b"refusing to save to a terminal" in proc.stderr and b"hint:" in proc.stderr


def test_failed_save_leaves_the_old_file_and_no_temporary(cli: Cli, loaded: ImageStore,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.tar"
    target.write_bytes(b"an older archive")
    one_error(cli("save", "-o", str(target), "app:1", "nothing:1"), "image not found")
    calls = []
    real_read = save_module._Verifying.read

    def interrupted(self, size=-1):
        calls.append(size)
        if len(calls) > 2:
            raise KeyboardInterrupt  # Ctrl-C halfway through the layers
        return real_read(self, size)

    monkeypatch.setattr(save_module._Verifying, "read", interrupted)
    assert cli("save", "-o", str(target), "app:1").status == 130
    assert target.read_bytes() == b"an older archive"
    assert sorted(os.listdir(tmp_path)) == ["keep.tar", "layout", "store"]


def test_damaged_blob_is_not_saved(cli: Cli, loaded: ImageStore, tmp_path: Path) -> None:
    layer = loaded.store.blob(loaded.get("app:1").layers[-1].digest)
    data = bytearray(layer.read_bytes())
    data[-1] ^= 0xFF
    layer.write_bytes(bytes(data))
    one_error(cli("save", "-o", str(tmp_path / "x.tar"), "app:1"), "damaged")
    assert not (tmp_path / "x.tar").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".hyperrun-save-")] == []


def test_temporary_of_a_killed_save_is_swept(cli: Cli, loaded: ImageStore,
                                             tmp_path: Path) -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    stale = tmp_path / f".hyperrun-save-{child.pid}-abcd"
    stale.write_bytes(b"half an archive")
    assert cli("save", "-o", str(tmp_path / "x.tar"), "app:1").status == 0
    assert not stale.exists() and (tmp_path / "x.tar").exists()


def test_loads_what_docker_save_wrote_and_saves_it_again(cli: Cli, store: Store,
                                                         tmp_path: Path) -> None:
    """A legacy docker archive (uncompressed layers) survives load -> save -> load."""
    files = docker_save_files([(PLAIN, ["legacy:1"])])
    assert cli("load", "-i", str(write_tar(files, tmp_path / "legacy.tar"))).status == 0
    images = ImageStore(store)
    image_id = images.get("legacy:1").id
    assert cli("save", "-o", str(tmp_path / "again.tar"), "legacy:1").status == 0
    assert cli("rmi", "legacy:1").status == 0
    assert cli("load", "-i", str(tmp_path / "again.tar")).out == "Loaded image: legacy:1\n"
    assert images.get("legacy:1").id == image_id


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo is not installed")
def test_skopeo_reads_the_archive(cli: Cli, loaded: ImageStore, tmp_path: Path) -> None:
    archive = tmp_path / "s.tar"
    assert cli("save", "-o", str(archive), "app:1", "registry.local:5000/x:y").status == 0
    for ref, spec in (("app:1", GZ), ("registry.local:5000/x:y", PLAIN)):
        raw = subprocess.run(["skopeo", "inspect", "--config", "--raw",
                              f"docker-archive:{archive}:{ref}"],
                             capture_output=True, check=True).stdout
        assert raw == spec.config_bytes()  # the config, byte for byte: the image id
    layout = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", "-q", f"docker-archive:{archive}:app:1",
                    f"oci:{layout}:copied"], check=True, capture_output=True)
    copied = json.loads((layout / "index.json").read_text())["manifests"][0]
    manifest = json.loads((layout / "blobs/sha256" / hexof(copied["digest"])).read_text())
    config = (layout / "blobs/sha256" / hexof(manifest["config"]["digest"])).read_bytes()
    # skopeo re-serialises the config when it converts to OCI; its content is ours.
    assert json.loads(config) == json.loads(GZ.config_bytes())
    fresh = Store(tmp_path / "fresh")
    proc = hyperrun(fresh, "load", "-i", str(layout))
    assert proc.returncode == 0, proc.stderr
    image = ImageStore(fresh).get(manifest["config"]["digest"])
    assert [la.diff_id for la in image.layers] == [la.diff_id for la in loaded.get("app:1").layers]


def test_full_disk_is_one_line_and_leaves_nothing(cli: Cli, loaded: ImageStore, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(save_module.os, "fsync", full)
    one_error(cli("save", "-o", str(tmp_path / "x.tar"), "app:1"), "No space left")
    assert sorted(os.listdir(tmp_path)) == ["layout", "store"]


def test_device_is_written_in_place(cli: Cli, loaded: ImageStore) -> None:
    before = os.stat("/dev/null")
    assert cli("save", "-o", "/dev/null", "app:1").status == 0
    after = os.stat("/dev/null")
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
