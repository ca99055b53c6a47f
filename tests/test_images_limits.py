"""Hostile images that are too large: gzip bombs, sparse files, huge declared sizes, one
layer listed many times, and stores running out of space. Each is refused while it streams,
before the bytes are kept, with a one-line error naming the limit or the store."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    ImageSpec,
    docker_save_files,
    file,
    hardlink,
    sha256,
    tar_bytes,
    write_tar,
)
from hostile import (
    LAYER_GZIP,
    REPO,
    MiB,
    build,
    end,
    gzip_bomb,
    header,
    hyperrun,
    image_layout,
    layer_images,
    leftovers,
    one_line_error,
    pax,
)

from hyperrun import config
from hyperrun.errors import HyperrunError, InvalidImage, UsageError
from hyperrun.images.compression import LayerDigest
from hyperrun.images.layers import apply_layers
from hyperrun.images.load import Loader
from hyperrun.images.store import ImageStore
from hyperrun.store import Store


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Store]:
    """A store on its own 24 MiB tmpfs, to run out of space on purpose."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "hyperrun-test", str(mnt)],
                   check=True)
    try:
        store = Store(mnt / "store")
        store.ensure()
        yield store
    finally:
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)


# ---- 1. inflation is bounded, and so is an image's size -------------------------------------


def test_gzip_bomb_load_is_refused_at_the_size_limit(
        images: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERRUN_MAX_IMAGE_SIZE", "16m")
    blob = tmp_path / "bomb.gz"
    _, diff_id = gzip_bomb(blob, 64 * MiB)
    path = image_layout(tmp_path / "layout", [(blob, LAYER_GZIP, diff_id)])
    with pytest.raises(InvalidImage, match="larger than the 16 MiB limit") as err:
        Loader(images).load(path)
    assert "HYPERRUN_MAX_IMAGE_SIZE" in (err.value.hint or "")
    assert images.list() == [] and leftovers(images.store) == []


def test_images_max_size_in_config_yaml(images: ImageStore, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "config.yaml"
    conf.write_text("images:\n  max_size: 8m\n")
    monkeypatch.setenv("HYPERRUN_CONFIG", str(conf))
    monkeypatch.delenv("HYPERRUN_MAX_IMAGE_SIZE", raising=False)
    blob = tmp_path / "bomb.gz"
    _, diff_id = gzip_bomb(blob, 9 * MiB)
    path = image_layout(tmp_path / "layout", [(blob, LAYER_GZIP, diff_id)])
    with pytest.raises(InvalidImage, match="larger than the 8 MiB limit") as err:
        Loader(images).load(path)
    assert "images.max_size" in (err.value.hint or "")
    conf.write_text("images:\n  max_size: 16m\n")
    assert Loader(images).load(path)[0].image.size > 9 * MiB


@pytest.mark.parametrize("text", ["images: {max_size: lots}", "images: {max_size: -1}",
                                  "images: {max_size: true}", "images: {maxsize: 1g}",
                                  "images: {max_size: ²g}", "images: {max_size: 1e400}"])
def test_images_max_size_is_strictly_validated(text: str) -> None:
    import yaml
    with pytest.raises(UsageError, match="images"):
        config.parse(yaml.safe_load(text))
    assert config.parse(yaml.safe_load("images: {max_size: 2g}")).max_image_size == 2 << 30


def test_gzip_bomb_load_keeps_memory_flat(tmp_path: Path) -> None:
    """Loading a 2 MB layer that inflates to 1 GiB takes far less than 1 GiB of RAM."""
    blob = tmp_path / "bomb.gz"
    _, diff_id = gzip_bomb(blob, 1 << 30)
    path = image_layout(tmp_path / "layout", [(blob, LAYER_GZIP, diff_id)])
    script = ("import resource, sys\nfrom pathlib import Path\n"
              "from hyperrun.images.load import Loader\nfrom hyperrun.images.store import "
              "ImageStore\nfrom hyperrun.store import Store\n"
              "Loader(ImageStore(Store(Path(sys.argv[1])))).load(Path(sys.argv[2]))\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "store"), str(path)],
                          capture_output=True, text=True, cwd=REPO, check=True)
    peak_kib = int(proc.stdout.split()[-1])
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB"


def test_import_of_a_bomb_is_refused_while_streaming(tmp_path: Path) -> None:
    blob = tmp_path / "rootfs.tar.gz"
    gzip_bomb(blob, 64 * MiB)
    root = tmp_path / "store"
    proc = hyperrun(root, "import", str(blob), "bomb:1", env={"HYPERRUN_MAX_IMAGE_SIZE": "16m"})
    one_line_error(proc, "larger than the 16 MiB limit")
    assert leftovers(Store(root)) == []


@pytest.mark.parametrize("suffix", ["gz", "bz2", "xz"])
def test_import_is_capped_whatever_the_compression(tmp_path: Path, suffix: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import bz2
    import lzma
    monkeypatch.setenv("HYPERRUN_MAX_IMAGE_SIZE", "8m")
    plain = header("zeros", size=32 * MiB) + b"\0" * (32 * MiB) + end()
    packed = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[suffix](plain)
    path = tmp_path / f"rootfs.tar.{suffix}"
    path.write_bytes(packed)
    images = ImageStore(Store(tmp_path / "store"))
    with pytest.raises(InvalidImage, match="larger than the 8 MiB limit"):
        Loader(images).import_rootfs(path, "capped:1")
    assert leftovers(images.store) == [] and images.list() == []


def test_layer_digest_of_a_pull_is_capped(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """A pull hashes layers through LayerDigest: the limit fires while the bytes stream."""
    monkeypatch.setenv("HYPERRUN_MAX_IMAGE_SIZE", "4m")
    blob = tmp_path / "bomb.gz"
    gzip_bomb(blob, 64 * MiB)
    digest = LayerDigest("alpine", "sha256:abc")
    data = blob.read_bytes()
    with pytest.raises(InvalidImage, match="image alpine is larger than the 4 MiB limit"):
        for i in range(0, len(data), 4096):
            digest.update(data[i:i + 4096])
    assert digest.budget.used <= 4 * MiB + (1 << 20)  # refused within a chunk of the limit


# ---- 3. sparse and huge declared sizes; running out of space --------------------------------


def pax_sparse_file(name: str, realsize: int) -> bytes:
    """A PAX 0.1 sparse file: one 512-byte region, `realsize` bytes once unpacked."""
    records = {"GNU.sparse.major": "0", "GNU.sparse.minor": "1",
               "GNU.sparse.name": name, "GNU.sparse.realsize": str(realsize),
               "GNU.sparse.numblocks": "1", "GNU.sparse.map": f"{realsize - 512},512"}
    return pax(records) + header("GNUSparseFile.0/" + name, size=512) + b"x" * 512


def test_sparse_terabyte_is_refused_before_writing(tmp_path: Path) -> None:
    images, rootfs = layer_images(tmp_path, pax_sparse_file("huge", 1 << 40) + end())
    with pytest.raises(InvalidImage, match="larger than the 32 GiB limit"):
        build(images, rootfs)
    assert not (rootfs / "huge").exists()


@pytest.mark.parametrize("staging", ["disk", "tmpfs"])
def test_sparse_file_larger_than_the_free_space_names_the_store(
        tmp_path: Path, small_store: Store, staging: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERRUN_STAGING", staging)
    layer = pax_sparse_file("big", 200 * MiB) + end()
    blob = gzip.compress(layer, mtime=0)
    path = image_layout(tmp_path / "layout", [(blob, LAYER_GZIP, sha256(layer))])
    images = ImageStore(small_store)
    Loader(images).load(path)
    with pytest.raises(HyperrunError, match=f"no space left on {small_store.root}$") as err:
        images.base_disk(images.get("hostile:latest"))
    assert not isinstance(err.value, InvalidImage)
    assert leftovers(small_store) == [] and list(small_store.disks.iterdir()) == []


def test_no_space_while_importing_is_not_called_corrupt(tmp_path: Path,
                                                        small_store: Store) -> None:
    blob = tmp_path / "rootfs.tar.gz"
    gzip_bomb(blob, 64 * MiB)  # compresses to little, inflates beyond the 24 MiB tmpfs
    proc = hyperrun(small_store.root, "import", str(blob))
    line = one_line_error(proc, f"no space left on {small_store.root}")
    assert "corrupt" not in line
    assert leftovers(small_store) == []


def test_docker_save_blob_larger_than_the_free_space(tmp_path: Path, small_store: Store) -> None:
    big = tar_bytes(file("big.bin", os.urandom(30 * MiB)))
    path = write_tar(docker_save_files([(ImageSpec([big]), ["big:1"])]), tmp_path / "save.tar")
    with pytest.raises(HyperrunError, match=f"no space left on {small_store.root}"):
        Loader(ImageStore(small_store)).load(path)
    assert leftovers(small_store) == []


def test_base_disk_larger_than_the_free_space_names_the_store(tmp_path: Path,
                                                              small_store: Store) -> None:
    big = tar_bytes(file("big.bin", os.urandom(14 * MiB)))
    path = write_tar(docker_save_files([(ImageSpec([big]), ["big:1"])]), tmp_path / "save.tar")
    images = ImageStore(small_store)
    Loader(images).load(path)  # 14 MiB of the 24 are now taken by the layer
    with pytest.raises(HyperrunError, match=f"no space left on {small_store.root}$"):
        images.base_disk(images.get("big:1"))
    assert list(small_store.disks.iterdir()) == [] and leftovers(small_store) == []


# ---- 4. one layer listed many times ---------------------------------------------------------


def repeated_save(tmp_path: Path, layer: bytes, times: int, lower: bytes | None = None) -> Path:
    spec = ImageSpec(([lower] if lower else []) + [layer] * times)
    return write_tar(docker_save_files([(spec, ["rep:1"])], modern=True), tmp_path / "save.tar")


def test_more_layers_than_pull_allows_is_refused(images: ImageStore, tmp_path: Path) -> None:
    path = repeated_save(tmp_path, tar_bytes(file("a", "a")), 300)
    with pytest.raises(InvalidImage, match="300 layers; at most 256"):
        Loader(images).load(path)


def test_each_listing_counts_against_the_size_limit(
        images: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERRUN_MAX_IMAGE_SIZE", "64m")
    path = repeated_save(tmp_path, tar_bytes(file("a.bin", b"x" * MiB)), 100)
    with pytest.raises(InvalidImage, match="larger than the 64 MiB limit"):
        Loader(images).load(path)


def test_repeated_layer_is_staged_once(tmp_path: Path, small_store: Store) -> None:
    """100 listings of a 1 MiB layer fit a 24 MiB store: the layer is copied in once."""
    path = repeated_save(tmp_path, tar_bytes(file("a.bin", os.urandom(MiB))), 100)
    (loaded,) = Loader(ImageStore(small_store)).load(path)
    assert len(loaded.image.layers) == 100


def test_layer_repeated_in_a_row_is_applied_once(images: ImageStore, tmp_path: Path) -> None:
    lower = tar_bytes(file("y", "lower\n"))
    # Links x to y, then removes y: applied a second time, the link would have no source.
    layer = tar_bytes(hardlink("x", "y"), file(".wh.y"))
    Loader(images).load(repeated_save(tmp_path, layer, 3, lower=lower))
    images.build_rootfs(images.get("rep:1"), tmp_path / "rootfs")
    assert (tmp_path / "rootfs/x").read_text() == "lower\n"
    assert not (tmp_path / "rootfs/y").exists()


def test_layers_repeated_apart_are_each_applied(tmp_path: Path) -> None:
    one, two = tmp_path / "one.tar", tmp_path / "two.tar"
    one.write_bytes(tar_bytes(file("f", "one\n")))
    two.write_bytes(tar_bytes(file("f", "two\n")))
    (tmp_path / "root").mkdir()
    apply_layers(tmp_path / "root", [("1", one), ("2", two), ("1", one)])
    assert (tmp_path / "root/f").read_text() == "one\n"


# ---- the size limit in a real pull ----------------------------------------------------------


def test_pull_of_a_bomb_is_refused_while_streaming(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blob = tmp_path / "bomb.gz"
    _, diff_id = gzip_bomb(blob, 64 * MiB)
    registry.push(image_layout(tmp_path / "layout", [(blob, LAYER_GZIP, diff_id)]),
                  "hostile/bomb:1", layout_ref="hostile:latest")
    root = tmp_path / "store"
    home = tmp_path / "home"
    home.mkdir()
    proc = hyperrun(root, "pull", f"{registry.host}/hostile/bomb:1",
                    env={"HYPERRUN_MAX_IMAGE_SIZE": "16m", "HOME": str(home)})
    one_line_error(proc, "larger than the 16 MiB limit")
    store = Store(root)
    assert list(store.blobs.iterdir()) == [] and ImageStore(store).list() == []


def test_pull_counts_every_layer_against_one_limit(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two 12 MiB layers: each fits a 16 MiB limit, the image does not."""
    layers = []
    for i in (1, 2):
        blob = tmp_path / f"layer{i}.gz"
        _, diff_id = gzip_bomb(blob, 12 * MiB + i)  # different sizes: two distinct blobs
        layers.append((blob, LAYER_GZIP, diff_id))
    registry.push(image_layout(tmp_path / "layout", layers), "hostile/twolayers:1",
                  layout_ref="hostile:latest")
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "store"
    proc = hyperrun(root, "pull", f"{registry.host}/hostile/twolayers:1",
                    env={"HYPERRUN_MAX_IMAGE_SIZE": "16m", "HOME": str(home)})
    one_line_error(proc, "larger than the 16 MiB limit")
    store = Store(root)
    assert ImageStore(store).list() == []
    # Refused while streaming: the layer that crossed the limit never entered the store.
    assert len(list(store.blobs.iterdir())) < 2
