"""The image store: loading verified archives, import, listing, removal and base disks."""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers import (
    ImageSpec,
    directory,
    docker_save_files,
    file,
    hexof,
    oci_layout_files,
    sha256,
    symlink,
    tar_bytes,
    write_dir,
    write_tar,
)

from hyperrun import subproc
from hyperrun.cli import images as cli_images
from hyperrun.errors import CommandFailed, HostileLayer, ImageNotFound, InvalidImage, UsageError
from hyperrun.images.load import Loader
from hyperrun.images.store import ImageStore
from hyperrun.store import Store

BASE = tar_bytes(directory("etc"), file("etc/os-release", "ID=test\n"), file("etc/gone", "x"),
                 directory("tmp", mode=0o1777), file("bin/tool", "#!/bin/sh\n", mode=0o755))
TOP = tar_bytes(file("etc/.wh.gone"), file("etc/x", "hello from the top layer\n"))


def simple(**kw) -> ImageSpec:
    return ImageSpec(layers=[BASE, TOP], **kw)


def store_contents(store: Store) -> tuple[list[str], bytes | None, list[str]]:
    index = store.images_index.read_bytes() if store.images_index.exists() else None
    return sorted(os.listdir(store.blobs)), index, sorted(os.listdir(store.tmp))


def debugfs(disk: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(disk)], check=True,
                          capture_output=True, text=True).stdout


# ---- load ----------------------------------------------------------------------------------


@pytest.mark.parametrize("modern", [False, True], ids=["legacy", "docker25"])
def test_load_docker_save(images: ImageStore, tmp_path: Path, modern: bool) -> None:
    spec = simple(config={"Entrypoint": ["/bin/tool"], "Cmd": [], "Env": ["A=1"],
                          "WorkingDir": "/srv", "User": "nobody"})
    archive = write_tar(docker_save_files([(spec, ["busybox:latest", "me/app:1"])],
                                          modern=modern), tmp_path / "save.tar")
    (loaded,) = Loader(images).load(archive)
    assert [t.familiar for t in loaded.tags] == ["busybox:latest", "me/app:1"]
    image = images.get("busybox")
    assert image.id == spec.id == loaded.image.id
    assert [str(r) for r in image.references] == ["docker.io/library/busybox:latest",
                                                  "docker.io/me/app:1"]
    assert image.config.entrypoint == ("/bin/tool",)
    assert image.config.cmd == ()  # set to empty: not the same as unset
    assert image.config.env == ("A=1",)
    assert (image.config.working_dir, image.config.user) == ("/srv", "nobody")
    assert [layer.diff_id for layer in image.layers] == [sha256(BASE), sha256(TOP)]
    assert image.size == len(BASE) + len(TOP)
    assert image.created == "2020-09-13T12:26:40Z"
    assert images.get("me/app:1") == image


def test_unset_config_fields_stay_none(images: ImageStore, tmp_path: Path) -> None:
    spec = simple(config={})
    Loader(images).load(write_tar(docker_save_files([(spec, ["a:b"])]), tmp_path / "s.tar"))
    config = images.get("a:b").config
    assert (config.entrypoint, config.cmd, config.env, config.working_dir, config.user) == (
        None, None, None, None, None)


def test_load_docker_save_with_shared_layer_symlinks(images: ImageStore, tmp_path: Path) -> None:
    # Old docker writes a layer shared by two images once and links the second copy.
    one, two = ImageSpec(layers=[BASE]), ImageSpec(layers=[BASE, TOP])
    files = docker_save_files([(one, ["one:1"]), (two, ["two:2"])])
    files["linked/layer.tar"] = "../" + hexof(sha256(BASE + b"id")) + "/layer.tar"
    manifest = json.loads(files["manifest.json"])
    manifest[1]["Layers"][0] = "linked/layer.tar"
    files["manifest.json"] = json.dumps(manifest).encode()
    Loader(images).load(write_tar(files, tmp_path / "save.tar"))
    assert images.get("two:2").layers[0].digest == images.get("one:1").layers[0].digest


def test_load_untagged_docker_save(images: ImageStore, tmp_path: Path) -> None:
    archive = write_tar(docker_save_files([(simple(), [])]), tmp_path / "s.tar")
    (loaded,) = Loader(images).load(archive)
    assert loaded.tags == () and loaded.image.references == ()
    assert images.get(loaded.image.id[7:19]) == loaded.image


@pytest.mark.parametrize("form", ["dir", "tar", "tar.gz"])
def test_load_oci_layout(images: ImageStore, tmp_path: Path, form: str) -> None:
    spec = simple()
    files = oci_layout_files([(spec, "registry.local:5000/team/app:v1"), (simple(compress=False,
                              config={"Cmd": ["other"]}), "other:latest")])
    if form == "dir":
        source = write_dir(files, tmp_path / "layout")
    else:
        source = write_tar(files, tmp_path / "layout.tar")
        if form == "tar.gz":
            gz = tmp_path / "layout.tar.gz"
            gz.write_bytes(gzip.compress(source.read_bytes()))
            source = gz
    loaded = Loader(images).load(source)
    assert [t.familiar for item in loaded for t in item.tags] == [
        "registry.local:5000/team/app:v1", "other:latest"]
    image = images.get("registry.local:5000/team/app:v1")
    assert image.id == spec.id
    assert image.manifest_digest == sha256(spec.manifest_bytes())
    assert image.layers[0].media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert images.get("other").config.cmd == ("other",)
    assert images.get("other").layers[0].media_type == "application/vnd.oci.image.layer.v1.tar"


def test_oci_bare_tag_ref_name_loads_untagged(images: ImageStore, tmp_path: Path) -> None:
    layout = write_dir(oci_layout_files([(simple(), "latest")]), tmp_path / "l")
    (loaded,) = Loader(images).load(layout)
    assert loaded.tags == ()


def test_nested_index_picks_linux_amd64(images: ImageStore, tmp_path: Path) -> None:
    arm = ImageSpec(layers=[BASE], architecture="arm64", config={"Cmd": ["arm"]})
    amd = ImageSpec(layers=[BASE], architecture="amd64", config={"Cmd": ["amd"]})
    Loader(images).load(write_dir(oci_layout_files([], nested={"arm64": arm, "amd64": amd}),
                          tmp_path / "l"))
    image = images.get("nested:latest")
    assert image.config.cmd == ("amd",) and image.architecture == "amd64"
    with pytest.raises(InvalidImage, match="no image for linux/amd64"):
        Loader(images).load(write_dir(oci_layout_files([], nested={"arm64": arm}), tmp_path / "l2"))


def test_images_survive_a_restart(store: Store, tmp_path: Path) -> None:
    archive = write_tar(docker_save_files([(simple(), ["a:1"])]), tmp_path / "s")
    Loader(ImageStore(store)).load(archive)
    assert ImageStore(Store(store.root)).get("a:1").id == simple().id


def test_loading_again_moves_tags(images: ImageStore, tmp_path: Path) -> None:
    old, new = simple(), ImageSpec(layers=[BASE])
    Loader(images).load(write_tar(docker_save_files([(old, ["app:1"])]), tmp_path / "a"))
    Loader(images).load(write_tar(docker_save_files([(new, ["app:1"])]), tmp_path / "b"))
    assert images.get("app:1").id == new.id
    assert images.get(old.id).references == ()  # dangling, as in docker


# ---- verification --------------------------------------------------------------------------


def _tamper_oci_layer(tmp_path: Path) -> Path:
    spec = simple()
    files = oci_layout_files([(spec, "bad:1")])
    name = "blobs/sha256/" + hexof(sha256(spec.blobs()[1]))
    files[name] = gzip.compress(tar_bytes(file("etc/x", "evil")), mtime=0)
    return write_dir(files, tmp_path / "tampered")


def test_tampered_oci_layer_is_refused_and_nothing_is_stored(store: Store, images: ImageStore,
                                                             tmp_path: Path) -> None:
    Loader(images).load(write_tar(docker_save_files([(ImageSpec(layers=[BASE]), ["ok:1"])]),
                          tmp_path / "ok.tar"))
    before = store_contents(store)
    with pytest.raises(InvalidImage, match="fails verification") as info:
        Loader(images).load(_tamper_oci_layer(tmp_path))
    assert info.value.hint
    assert store_contents(store) == before
    with pytest.raises(ImageNotFound):
        images.get("bad:1")


@pytest.mark.parametrize("blob", ["config", "manifest", "index-size"])
def test_tampered_oci_metadata_is_refused(store: Store, images: ImageStore, tmp_path: Path,
                                          blob: str) -> None:
    spec = simple()
    files = oci_layout_files([(spec, "bad:1")])
    if blob == "config":
        files["blobs/sha256/" + hexof(spec.id)] = spec.config_bytes().replace(b"sh", b"zz")
    elif blob == "manifest":
        name = "blobs/sha256/" + hexof(sha256(spec.manifest_bytes()))
        files[name] = files[name].replace(b"schemaVersion\": 2", b"schemaVersion\": 3")
    else:
        index = json.loads(files["index.json"])
        index["manifests"][0]["size"] += 1
        files["index.json"] = json.dumps(index).encode()
    with pytest.raises(InvalidImage):
        Loader(images).load(write_dir(files, tmp_path / "l"))
    assert store_contents(store) == ([], None, [])


def test_docker_save_diff_id_mismatch_is_refused(store: Store, images: ImageStore,
                                                 tmp_path: Path) -> None:
    files = docker_save_files([(simple(), ["bad:1"])])
    layer = next(n for n in files if n.endswith("layer.tar") and files[n] == TOP)
    files[layer] = tar_bytes(file("etc/x", "evil"))
    with pytest.raises(InvalidImage, match="fails verification"):
        Loader(images).load(write_tar(files, tmp_path / "s.tar"))
    assert store_contents(store) == ([], None, [])


def test_docker_save_config_digest_mismatch_is_refused(store: Store, images: ImageStore,
                                                       tmp_path: Path) -> None:
    spec = simple()
    files = docker_save_files([(spec, ["bad:1"])])
    files[hexof(spec.id) + ".json"] = spec.config_bytes().replace(b'"sh"', b'"xx"')
    with pytest.raises(InvalidImage, match="fails verification"):
        Loader(images).load(write_tar(files, tmp_path / "s.tar"))
    assert store_contents(store) == ([], None, [])


def test_zstd_layers_are_refused(images: ImageStore, tmp_path: Path) -> None:
    files = oci_layout_files([(simple(), "z:1")])
    for name, data in list(files.items()):
        files[name] = data.replace(b"tar+gzip", b"tar+zstd")
    index = json.loads(files["index.json"])
    manifest = next(v for k, v in files.items() if b"tar+zstd" in v and k.startswith("blobs"))
    index["manifests"][0]["digest"] = sha256(manifest)
    index["manifests"][0]["size"] = len(manifest)
    files["blobs/sha256/" + hexof(sha256(manifest))] = manifest
    files["index.json"] = json.dumps(index).encode()
    with pytest.raises(InvalidImage, match="unsupported layer type"):
        Loader(images).load(write_dir(files, tmp_path / "l"))


@pytest.mark.parametrize("content", [b"", b"not a tar at all" * 100])
def test_garbage_archives_are_invalid(images: ImageStore, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk"
    path.write_bytes(content)
    with pytest.raises(InvalidImage):
        Loader(images).load(path)


def test_archive_without_manifest_is_invalid(images: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match="neither a docker save archive nor an OCI"):
        Loader(images).load(write_tar({"hello": b"x"}, tmp_path / "x.tar"))


# ---- import --------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_import_rootfs(images: ImageStore, tmp_path: Path, compress: bool) -> None:
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(tar_bytes(file("etc/x", "imported\n"), compress=compress))
    loaded = Loader(images).import_rootfs(rootfs, "imported:v1")
    image = images.get("imported:v1")
    assert loaded.image == image
    assert len(image.layers) == 1 and image.layers[0].diff_id == sha256(tar_bytes(
        file("etc/x", "imported\n")))
    config = image.config
    assert (config.entrypoint, config.cmd, config.env, config.working_dir, config.user) == (
        None, None, None, None, None)
    disk = images.base_disk(image)
    assert debugfs(disk, "cat /etc/x") == "imported\n"


def test_import_refuses_bad_names_and_non_tars(store: Store, images: ImageStore,
                                               tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(tar_bytes(file("x")))
    with pytest.raises(UsageError, match="digest"):
        Loader(images).import_rootfs(rootfs, "app@sha256:" + "0" * 64)
    with pytest.raises(UsageError):
        Loader(images).import_rootfs(rootfs, "Bad Name")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(InvalidImage, match="not a tar"):
        Loader(images).import_rootfs(junk, "junk")
    assert store_contents(store) == ([], None, [])


# ---- lookup and removal --------------------------------------------------------------------


def test_get_by_id_prefix_and_digest(images: ImageStore, tmp_path: Path) -> None:
    spec = simple()
    Loader(images).load(write_dir(oci_layout_files([(spec, "app:1")]), tmp_path / "l"))
    image = images.get("app:1")
    for text in (spec.id, hexof(spec.id), hexof(spec.id)[:12], spec.id[:15]):
        assert images.get(text) == image
    assert images.get(f"app@{image.manifest_digest}") == image
    for missing in ("app:2", "nothing", "0" * 64, f"other@{image.manifest_digest}"):
        with pytest.raises(ImageNotFound):
            images.get(missing)
    with pytest.raises(UsageError):
        images.get("Not/Valid")


def test_rmi_by_tag_then_last_tag_deletes(store: Store, images: ImageStore,
                                          tmp_path: Path) -> None:
    spec = simple()
    Loader(images).load(write_tar(docker_save_files([(spec, ["app:1", "app:2"])]), tmp_path / "s"))
    disk = images.base_disk(images.get("app:1"))
    assert images.remove("app:1") == [("Untagged", "app:1")]
    assert images.get("app:2").id == spec.id and disk.exists()
    assert images.remove("app:2") == [("Untagged", "app:2"), ("Deleted", spec.id)]
    assert os.listdir(store.blobs) == [] and not disk.exists()
    assert json.loads(store.images_index.read_text())["images"] == {}
    with pytest.raises(ImageNotFound):
        images.remove("app:2")


def test_rmi_by_id_across_repositories_needs_force(images: ImageStore, tmp_path: Path) -> None:
    spec = simple()
    Loader(images).load(write_tar(docker_save_files([(spec, ["one:1", "two:1"])]), tmp_path / "s"))
    with pytest.raises(UsageError, match="must be forced"):
        images.remove(hexof(spec.id)[:12])
    assert images.remove(hexof(spec.id)[:12], force=True) == [
        ("Untagged", "one:1"), ("Untagged", "two:1"), ("Deleted", spec.id)]


def test_rmi_keeps_blobs_other_images_use(store: Store, images: ImageStore,
                                          tmp_path: Path) -> None:
    small, big = ImageSpec(layers=[BASE]), simple()
    Loader(images).load(write_tar(docker_save_files([(small, ["small:1"]), (big, ["big:1"])]),
                          tmp_path / "s"))
    images.remove("big:1")
    assert store.blob(sha256(BASE)).exists()
    assert not store.blob(sha256(TOP)).exists()
    disk = images.base_disk(images.get("small:1"))
    assert debugfs(disk, "cat /etc/gone") == "x"


def test_rmi_refuses_images_containers_use(images: ImageStore, tmp_path: Path) -> None:
    spec = simple()
    Loader(images).load(write_tar(docker_save_files([(spec, ["app:1"])]), tmp_path / "s"))
    users = {spec.id: ["c0ffee" * 4]}.get
    with pytest.raises(UsageError, match="being used by container c0ffeec0ffee"):
        images.remove("app:1", users=lambda i: users(i, []))
    assert images.get("app:1").id == spec.id
    # Forced, it is untagged but kept for the container.
    assert images.remove("app:1", force=True, users=lambda i: users(i, [])) == [
        ("Untagged", "app:1")]
    assert images.get(spec.id).references == ()


def test_digest_references_sort_with_tags(store: Store, images: ImageStore,
                                          tmp_path: Path) -> None:
    spec = simple()
    Loader(images).load(write_tar(docker_save_files([(spec, ["app:1"])]), tmp_path / "s"))
    manifest = images.get("app:1").manifest_digest
    index = json.loads(store.images_index.read_text())
    index["references"][f"docker.io/library/app@{manifest}"] = spec.id  # as a pull records it
    store.images_index.write_text(json.dumps(index))
    assert [r.familiar for r in images.get(spec.id).references] == [
        "app:1", f"app@{manifest}"]
    assert images.get(f"app@{manifest}").id == spec.id


# ---- base disks ----------------------------------------------------------------------------


def test_base_disk_holds_the_merged_layers(store: Store, images: ImageStore,
                                           tmp_path: Path) -> None:
    Loader(images).load(write_tar(docker_save_files([(simple(), ["app:1"])]), tmp_path / "s"))
    image = images.get("app:1")
    disk = images.base_disk(image)
    assert disk == store.disks / f"{hexof(image.id)}.ext4"
    # Read-only, and readable by QEMU's group alone (containers/ decides who may see data).
    assert stat.S_IMODE(disk.stat().st_mode) == 0o440 and disk.stat().st_uid == 0
    assert debugfs(disk, "cat /etc/x") == "hello from the top layer\n"
    assert debugfs(disk, "cat /etc/os-release") == "ID=test\n"
    listing = debugfs(disk, "ls -l /etc")
    assert "os-release" in listing and "gone" not in listing
    assert "01777" in debugfs(disk, "stat /tmp")
    assert "Filesystem volume name:   rootfs" in subprocess.run(
        ["dumpe2fs", "-h", str(disk)], capture_output=True, text=True, check=True).stdout
    # Room for containers to write, without using it on the host.
    assert disk.stat().st_size >= 2 << 30
    assert disk.stat().st_blocks * 512 < 64 << 20
    # Cached: the second call does not rebuild.
    mtime = disk.stat().st_mtime_ns
    assert images.base_disk(image) == disk and disk.stat().st_mtime_ns == mtime
    assert os.listdir(store.tmp) == []


def test_hostile_image_leaves_no_disk_and_no_staging(store: Store, images: ImageStore,
                                                     tmp_path: Path, ) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = tar_bytes(file("ok", "x"), symlink("lnk", str(outside)), file("../../evil", "x"))
    Loader(images).load(write_tar(docker_save_files([(ImageSpec(layers=[evil]), ["evil:1"])]),
                          tmp_path / "s"))
    with pytest.raises(HostileLayer, match="'..'"):
        images.base_disk(images.get("evil:1"))
    assert os.listdir(store.disks) == [] and os.listdir(store.tmp) == []
    assert os.listdir(outside) == []


def test_concurrent_base_disk_builds_once(store: Store, images: ImageStore,
                                          tmp_path: Path) -> None:
    Loader(images).load(write_tar(docker_save_files([(simple(), ["app:1"])]), tmp_path / "s"))
    image = images.get("app:1")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        disks = list(pool.map(lambda _: ImageStore(store).base_disk(image), range(4)))
    assert len(set(disks)) == 1
    assert os.listdir(store.disks) == [disks[0].name]
    assert debugfs(disks[0], "cat /etc/x") == "hello from the top layer\n"


def test_failed_disk_build_leaves_nothing(store: Store, images: ImageStore, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    Loader(images).load(write_tar(docker_save_files([(simple(), ["app:1"])]), tmp_path / "s"))
    real_run = subproc.run

    def failing_mkfs(argv, **kw):
        real_run(argv, **kw)  # leave a complete-looking file behind, then fail
        raise CommandFailed(list(argv), 1, "mkfs.ext4: simulated failure")

    monkeypatch.setattr(subproc, "run", failing_mkfs)
    with pytest.raises(CommandFailed, match="simulated failure"):
        images.base_disk(images.get("app:1"))
    assert os.listdir(store.disks) == [] and os.listdir(store.tmp) == []


def test_overlay_is_backed_by_the_raw_base(images: ImageStore, tmp_path: Path) -> None:
    from hyperrun.images.disk import create_overlay

    Loader(images).load(write_tar(docker_save_files([(simple(), ["app:1"])]), tmp_path / "s"))
    base = images.base_disk(images.get("app:1"))
    overlay = tmp_path / "c" / "overlay.qcow2"
    overlay.parent.mkdir()
    create_overlay(base, overlay)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                     capture_output=True, check=True, text=True).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "raw"
    # root's alone: libvirt lends it to QEMU while the VM runs.
    assert stat.S_IMODE(overlay.stat().st_mode) == 0o600


# ---- the CLI verbs -------------------------------------------------------------------------


def _cli(store: Store, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_images.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args, store)


def test_cli_load_images_rmi(store: Store, tmp_path: Path, capsys) -> None:
    spec = simple()
    archive = write_dir(oci_layout_files([(spec, "busybox:latest"), (spec, "me/app:2")]),
                        tmp_path / "l")
    assert _cli(store, "load", "-q", "-i", str(archive)) == 0
    assert capsys.readouterr().out == "Loaded image: busybox:latest\nLoaded image: me/app:2\n"

    assert _cli(store, "images") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert lines[0].startswith("REPOSITORY   TAG       IMAGE ID       CREATED")
    short = hexof(spec.id)[:12]
    rows = sorted(line.split()[:3] for line in lines[1:])
    assert rows == [["busybox", "latest", short], ["me/app", "2", short]]
    assert all(line.rstrip().endswith("kB") for line in lines[1:])
    assert "years ago" in lines[1]

    assert _cli(store, "images", "-q", "busybox:latest") == 0
    assert capsys.readouterr().out == short + "\n"
    assert _cli(store, "images", "-q") == 0
    assert capsys.readouterr().out == f"{short}\n{short}\n"  # one per row, as docker
    assert _cli(store, "images", "-q", "nothing") == 0
    assert capsys.readouterr().out == ""

    assert _cli(store, "rmi", "busybox", "me/app:2") == 0
    assert capsys.readouterr().out == (
        f"Untagged: busybox:latest\nUntagged: me/app:2\nDeleted: {spec.id}\n")
    with pytest.raises(ImageNotFound):
        _cli(store, "rmi", "busybox")


def test_cli_import(store: Store, tmp_path: Path, capsys) -> None:
    rootfs = tmp_path / "r.tar"
    rootfs.write_bytes(tar_bytes(file("x")))
    assert _cli(store, "import", str(rootfs), "mine:1") == 0
    image_id = capsys.readouterr().out.strip()
    assert ImageStore(store).get("mine:1").id == image_id


def test_make_busybox_image_loads_and_is_deterministic(store: Store, tmp_path: Path) -> None:
    script = Path(__file__).parent.parent / "scripts" / "make-busybox-image"
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox-static is not installed")
    for name in ("a.tar", "b.tar"):
        subprocess.run([str(script), str(tmp_path / name)], check=True)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert {"oci-layout", "index.json"} <= set(tar.getnames())
    images = ImageStore(store)
    (loaded,) = Loader(images).load(tmp_path / "a.tar")
    assert [t.familiar for t in loaded.tags] == ["busybox:latest"]
    image = images.get("busybox")
    assert image.config.cmd == ("sh",)
    assert image.config.env == (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    assert (image.os, image.architecture) == ("linux", "amd64")
    disk = images.base_disk(image)
    assert debugfs(disk, "cat /etc/passwd").startswith("root:x:0:0:")
    assert "/bin/busybox" in debugfs(disk, "stat /bin/sh")
    assert "01777" in debugfs(disk, "stat /tmp")


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo is not installed")
def test_loads_what_skopeo_writes(images: ImageStore, tmp_path: Path) -> None:
    spec = simple()
    layout = write_tar(oci_layout_files([(spec, "app:1")]), tmp_path / "layout.tar")
    archive = tmp_path / "docker.tar"
    subprocess.run(["skopeo", "copy", "-q", f"oci-archive:{layout}",
                    f"docker-archive:{archive}:skopeo/app:2"], check=True)
    (loaded,) = Loader(images).load(archive)
    assert [t.familiar for t in loaded.tags] == ["skopeo/app:2"]
    assert loaded.image.id == spec.id
    assert debugfs(images.base_disk(loaded.image), "cat /etc/x") == "hello from the top layer\n"
