"""tag, history, and rmi's digest references, as a user sees them from the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import ImageSpec, docker_save_files, hexof, oci_layout_files, write_dir
from verbs import (  # noqa: F401 - cli_fixture is the `cli` fixture
    BASE,
    LONG_RUN,
    TOP,
    Cli,
    Result,
    WithHistory,
    cli_fixture,
    hyperrun,
    load,
    one_error,
    rows,
)

from hyperrun.cli.table import human_size
from hyperrun.images.store import ImageStore
from hyperrun.store import Store

# ---- tag -----------------------------------------------------------------------------------


def test_tag_by_reference_id_and_digest(cli: Cli, store: Store, tmp_path: Path) -> None:
    spec = ImageSpec(layers=[BASE])
    load(cli, oci_layout_files([(spec, "app:1")]), tmp_path / "a.tar")
    image = ImageStore(store).get("app:1")
    assert cli("tag", "app:1", "registry.local:5000/team/app:v2") == Result(0, "", "")
    assert cli("tag", hexof(spec.id)[:12], "other") == Result(0, "", "")
    assert cli("image", "tag", f"app@{image.manifest_digest}", "third:x").status == 0
    out = cli("images").out
    assert sorted(r[:3] for r in rows(out)) == [
        ["app", "1", hexof(spec.id)[:12]], ["other", "latest", hexof(spec.id)[:12]],
        ["registry.local:5000/team/app", "v2", hexof(spec.id)[:12]],
        ["third", "x", hexof(spec.id)[:12]]]


def test_tag_moves_an_existing_tag(cli: Cli, store: Store, tmp_path: Path) -> None:
    one, two = ImageSpec(layers=[BASE]), ImageSpec(layers=[BASE, TOP])
    load(cli, docker_save_files([(one, ["app:1"]), (two, ["app:2", "app:latest"])]),
         tmp_path / "s.tar")
    assert cli("tag", "app:1", "app").status == 0
    images = ImageStore(store)
    assert images.get("app:latest").id == one.id and images.get("app:2").id == two.id
    # The image that lost its last tag stays, untagged, as in docker.
    assert cli("tag", "app:1", "app:2").status == 0
    assert images.get(two.id).references == ()
    assert ["<none>", "<none>", hexof(two.id)[:12]] in [r[:3] for r in rows(cli("images").out)]


@pytest.mark.parametrize(("target", "words"), [
    ("Upper:1", ["lowercase"]),
    ("app@sha256:" + "a" * 64, ["digest"]),
    ("a" * 64, ["64-byte"]),
    ("app:bad tag", ["invalid reference"]),
    ("app:" + "t" * 129, ["invalid reference"]),
])
def test_tag_validates_the_target(cli: Cli, store: Store, tmp_path: Path, target: str,
                                  words: list[str]) -> None:
    load(cli, oci_layout_files([(ImageSpec(layers=[BASE]), "app:1")]), tmp_path / "a.tar")
    before = store.images_index.read_bytes()
    one_error(cli("tag", "app:1", target), *words)
    assert store.images_index.read_bytes() == before


def test_tag_of_a_missing_image(cli: Cli) -> None:
    one_error(cli("tag", "nothing:1", "app:1"), "image not found: nothing:1")


# ---- rmi: digest references go with the last tag -------------------------------------------


def _with_digest_refs(store: Store, image_id: str, *repos: str) -> str:
    """Record repo@manifest-digest references, as a pull records them beside its tag."""
    manifest = ImageStore(store).get(image_id).manifest_digest
    index = json.loads(store.images_index.read_text())
    for repo in repos:
        index["references"][f"docker.io/library/{repo}@{manifest}"] = image_id
    store.images_index.write_text(json.dumps(index))
    return manifest


def test_rmi_of_the_last_tag_removes_its_digest_references(cli: Cli, store: Store,
                                                           tmp_path: Path) -> None:
    spec = ImageSpec(layers=[BASE])
    load(cli, oci_layout_files([(spec, "app:1")]), tmp_path / "a.tar")
    manifest = _with_digest_refs(store, spec.id, "app")
    result = cli("rmi", "app:1")
    assert result.out == f"Untagged: app:1\nUntagged: app@{manifest}\nDeleted: {spec.id}\n"
    assert cli("images", "-q").out == "" and os.listdir(store.blobs) == []


def test_rmi_keeps_digest_references_while_the_repository_has_a_tag(
        cli: Cli, store: Store, tmp_path: Path) -> None:
    spec = ImageSpec(layers=[BASE])
    load(cli, oci_layout_files([(spec, "app:1"), (spec, "app:2")]), tmp_path / "a.tar")
    manifest = _with_digest_refs(store, spec.id, "app", "mirror")
    assert cli("rmi", "app:1").out == "Untagged: app:1\n"
    refs = [r.familiar for r in ImageStore(store).get(spec.id).references]
    assert refs == ["app:2", f"app@{manifest}", f"mirror@{manifest}"]
    # Another repository's digest keeps the image, shown as that repository's <none>.
    assert cli("rmi", "app:2").out == f"Untagged: app:2\nUntagged: app@{manifest}\n"
    assert [r[:2] for r in rows(cli("images").out)] == [["mirror", "<none>"]]


def test_rmi_after_a_real_pull_leaves_nothing(registry, store: Store, tmp_path: Path) -> None:
    spec = ImageSpec(layers=[BASE, TOP], config={"Cmd": ["sh"]})
    layout = write_dir(oci_layout_files([(spec, "latest")]), tmp_path / "layout")
    registry.push(layout, "verbs/pulled:v1", layout_ref="latest", docker=True)
    ref = f"{registry.host}/verbs/pulled:v1"
    pulled = hyperrun(store, "pull", "-q", ref)
    assert pulled.returncode == 0, pulled.stderr
    image = ImageStore(store).get(ref)
    assert len(image.references) == 2  # the tag and the digest
    archive = tmp_path / "pulled.tar"
    assert hyperrun(store, "save", "-o", str(archive), ref).returncode == 0
    removed = hyperrun(store, "rmi", ref)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.decode().splitlines()[-1] == f"Deleted: {spec.id}"
    assert hyperrun(store, "images", "-q").stdout == b""
    assert os.listdir(store.blobs) == []
    # The pulled image (docker media types, gzip layers) comes back from its archive.
    if shutil.which("skopeo"):
        inspected = subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"],
                                   capture_output=True, check=True, text=True).stdout
        # skopeo names docker-archive layers by their uncompressed digests
        assert json.loads(inspected)["Layers"] == [la.diff_id for la in image.layers]
    assert hyperrun(store, "load", "-i", str(archive)).stdout.decode() == f"Loaded image: {ref}\n"
    assert ImageStore(store).get(ref).id == spec.id


# ---- history -------------------------------------------------------------------------------


HISTORY = [
    {"created": "2020-09-13T12:26:40Z", "created_by": "/bin/sh -c #(nop) ADD file:abc in / "},
    {"created": "2020-09-13T12:26:41Z", "created_by": "/bin/sh -c #(nop)  ENV A=1",
     "empty_layer": True},
    {"created": "2020-09-13T12:26:42Z", "created_by": LONG_RUN, "comment": "buildkit.v0"},
    {"created": "2020-09-13T12:26:43Z", "created_by": "echo \x1b[31mred\tx",
     "empty_layer": True},
]


def test_history(cli: Cli, store: Store, tmp_path: Path) -> None:
    spec = WithHistory(layers=[BASE, TOP], history=HISTORY)
    load(cli, docker_save_files([(spec, ["app:1"])]), tmp_path / "s.tar")
    out = cli("history", "app:1").out
    lines = out.splitlines()
    assert lines[0].split("   ")[:1] == ["IMAGE"]
    for column in ("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"):
        assert column in lines[0]
    assert len(lines) == 1 + len(HISTORY)
    # Newest first; only the top step has the image's id.
    assert lines[1].startswith(hexof(spec.id)[:12] + " ")
    assert all(line.startswith("<missing> ") for line in lines[2:])
    assert "years ago" in lines[1]
    sizes = [human_size(0), human_size(len(TOP)), human_size(0), human_size(len(BASE))]
    for line, size in zip(lines[1:], sizes, strict=True):
        assert f"   {size}   " in line or line.rstrip().endswith(size), line
    truncated = LONG_RUN[:44] + "…"
    assert truncated in lines[2] and lines[2].rstrip().endswith("buildkit.v0")
    assert "\x1b" not in out and "echo \\x1b[31mred x" in lines[1]  # escaped, tab as space
    full = cli("image", "history", "--no-trunc", "app:1").out
    assert LONG_RUN in full and spec.id in full
    assert cli("history", "-q", "app:1").out == (
        hexof(spec.id)[:12] + "\n" + "<missing>\n" * (len(HISTORY) - 1))
    # Images stored before the index kept layer sizes: the layers are measured instead.
    index = json.loads(store.images_index.read_text())
    del index["images"][spec.id]["layer_sizes"]
    store.images_index.write_text(json.dumps(index))
    assert cli("history", "app:1").out.split("\n")[1:] == out.split("\n")[1:]


def test_history_of_gzip_layers_shows_uncompressed_sizes(cli: Cli, tmp_path: Path) -> None:
    spec = WithHistory(layers=[TOP], history=HISTORY[:1])
    load(cli, oci_layout_files([(spec, "gz:1")]), tmp_path / "l.tar")
    assert len(spec.blobs()[0]) != len(TOP)  # compressed in the store
    assert human_size(len(TOP)) in cli("history", "gz:1").out


def test_history_without_history_and_of_missing_images(cli: Cli, tmp_path: Path) -> None:
    load(cli, oci_layout_files([(ImageSpec(layers=[BASE]), "bare:1")]), tmp_path / "l.tar")
    assert cli("history", "bare:1").out.splitlines()[1:] == []  # docker lists no steps either
    one_error(cli("history", "nothing"), "image not found")


def test_history_with_more_steps_than_layers_is_an_error(cli: Cli, tmp_path: Path) -> None:
    spec = WithHistory(layers=[BASE], history=HISTORY[:1] * 2)
    load(cli, docker_save_files([(spec, ["odd:1"])]), tmp_path / "s.tar")
    one_error(cli("history", "odd:1"), "more layers")
