"""`image prune`, `system df` and `system prune`, against container records (no VM boots)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest
from helpers import ImageSpec, hexof, oci_layout_files, sha256, write_dir
from verbs import BASE, REPO, TOP, Cli, cli_fixture, load, one_error  # noqa: F401

from hyperrun.cli.table import human_size
from hyperrun.containers import names, records
from hyperrun.images.store import ImageStore
from hyperrun.store import Store

TAGGED = ImageSpec(layers=[BASE, TOP], config={"Cmd": ["tagged"]})
LOOSE = ImageSpec(layers=[TOP], config={"Cmd": ["loose"]})
USED = ImageSpec(layers=[BASE], config={"Cmd": ["used"]})  # untagged, but a container's
DIGEST_ONLY = ImageSpec(layers=[TOP], config={"Cmd": ["digest"]})


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def du(*paths: Path) -> int:
    """Allocated bytes, as du counts them (an independent measure of what was freed)."""
    out = subprocess.run(["du", "-s", "--block-size=1", *map(str, paths)], check=True,
                         capture_output=True, text=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines())


@pytest.fixture
def stocked(cli: Cli, store: Store, tmp_path: Path) -> ImageStore:
    """Four images: tagged, untagged, untagged but used by a container, digest-only."""
    layout = oci_layout_files([(TAGGED, "app:1"), (LOOSE, None), (USED, None),
                               (DIGEST_ONLY, "digest:1")])
    assert cli("load", "-q", "-i", str(write_dir(layout, tmp_path / "layout"))).status == 0
    images = ImageStore(store)
    manifest = images.get("digest:1").manifest_digest
    index = json.loads(store.images_index.read_text())
    del index["references"]["docker.io/library/digest:1"]
    index["references"][f"docker.io/library/digest@{manifest}"] = DIGEST_ONLY.id
    store.images_index.write_text(json.dumps(index))
    for image in images.list():
        images.base_disk(image)
    return images


def container(store: Store, image: ImageSpec, *, exited: bool, overlay: int = 0,
              owner: int | None = None) -> records.Container:
    c = records.create(store, names.new_id(), None, "x", image.id, ("true",), remove=False)
    if overlay:
        records.paths(store, c.id).overlay.write_bytes(os.urandom(overlay))
    if owner is not None:
        data = json.loads(records.paths(store, c.id).record.read_text())
        data["owner_pid"] = owner
        records.paths(store, c.id).record.write_text(json.dumps(data))
        c = next(x for x in records.all_containers(store) if x.id == c.id)
    return records.record_exit(store, c, 0) if exited else c


def ids(images: ImageStore) -> set[str]:
    return {image.id for image in images.list()}


# ---- image prune ---------------------------------------------------------------------------


def test_image_prune_removes_dangling_images_only(cli: Cli, store: Store,
                                                  stocked: ImageStore) -> None:
    container(store, USED, exited=True)  # even a stopped container keeps its image
    manifest = stocked.get(DIGEST_ONLY.id).manifest_digest
    before = du(store.blobs, store.disks)
    result = cli("image", "prune", "-f")
    assert result.status == 0
    freed = before - du(store.blobs, store.disks)
    assert freed > 0
    report, total = result.out.split("\n\n")
    assert sorted(report.splitlines()[1:]) == sorted([
        f"deleted: {LOOSE.id}", f"untagged: digest@{manifest}", f"deleted: {DIGEST_ONLY.id}"])
    assert report.splitlines()[0] == "Deleted Images:"
    assert total == f"Total reclaimed space: {human_size(freed, 4)}\n"
    assert ids(stocked) == {TAGGED.id, USED.id}
    assert sorted(os.listdir(store.disks)) == sorted(
        f"{hexof(i)}.ext4" for i in (TAGGED.id, USED.id))
    # Nothing left to do: docker still prints the total.
    assert cli("image", "prune", "-f").out == "Total reclaimed space: 0B\n"


def test_image_prune_all_keeps_used_images_and_shared_blobs(cli: Cli, store: Store,
                                                            stocked: ImageStore) -> None:
    container(store, USED, exited=False)
    result = cli("image", "prune", "-a", "-f")
    assert result.status == 0
    assert "untagged: app:1\n" in result.out and f"deleted: {TAGGED.id}\n" in result.out
    assert ids(stocked) == {USED.id}
    # The BASE layer is shared by TAGGED and USED: it stays for USED; TOP is gone.
    assert store.blob(sha256(USED.blobs()[0])).exists()
    assert not store.blob(sha256(TAGGED.blobs()[1])).exists()
    assert stocked.base_disk(stocked.get(USED.id)).exists()


def test_prune_asks_on_a_terminal_and_refuses_without_one(cli: Cli, store: Store,
                                                          stocked: ImageStore) -> None:
    before = ids(stocked)
    one_error(cli("image", "prune"), "not a terminal", "-f")  # pytest's stdin is no terminal
    one_error(cli("system", "prune", "-a"), "not a terminal", "-f")
    assert ids(stocked) == before
    env = {**os.environ, "HYPERRUN_ROOT": str(store.root)}
    for answer, status in (("n", 1), ("y", 0)):
        child = pexpect.spawn(sys.executable, ["-m", "hyperrun", "image", "prune"], env=env,
                              cwd=str(REPO), timeout=60, encoding="utf-8")
        child.expect_exact("WARNING! This will remove all dangling images.")
        child.expect_exact("Are you sure you want to continue? [y/N] ")
        child.sendline(answer)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == status, child.before
        if answer == "n":
            assert "cancelled" in child.before and ids(stocked) == before
    assert ids(stocked) == {TAGGED.id}


# ---- system df -----------------------------------------------------------------------------


def test_system_df(cli: Cli, store: Store, stocked: ImageStore) -> None:
    running = container(store, USED, exited=False, overlay=300_000)
    stopped = container(store, USED, exited=True, overlay=100_000)
    out = cli("system", "df").out
    lines = out.splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    table = {line[:16].strip(): line[16:].split() for line in lines[1:]}
    assert list(table) == ["Images", "Containers", "Local Volumes"]

    files = [p for d in (store.blobs, store.disks) for p in d.iterdir()]
    size = sum(p.stat().st_blocks * 512 for p in files)
    needed = {sha256(USED.config_bytes()), sha256(USED.manifest_bytes()),
              *(sha256(b) for b in USED.blobs())}
    kept = sum(p.stat().st_blocks * 512 for p in files
               if "sha256:" + p.name in needed or p.name == f"{hexof(USED.id)}.ext4")
    assert table["Images"] == ["4", "1", human_size(size, 4), human_size(size - kept, 4),
                               f"({(size - kept) * 100 // size}%)"]

    sizes = {c.id: du(records.paths(store, c.id).dir) for c in (running, stopped)}
    total = sum(sizes.values())
    assert table["Containers"] == ["2", "1", human_size(total, 4),
                                   human_size(sizes[stopped.id], 4),
                                   f"({sizes[stopped.id] * 100 // total}%)"]
    assert table["Local Volumes"] == ["0", "0", "0B", "0B"]


def test_system_df_of_an_empty_store(cli: Cli) -> None:
    out = cli("system", "df").out
    assert [line.split()[-3:] for line in out.splitlines()[1:]] == [["0", "0B", "0B"]] * 3


# ---- system prune --------------------------------------------------------------------------


def _orphans(store: Store) -> dict[str, Path]:
    old = time.time() - 2 * 3600
    blob = store.blobs / ("e" * 64)  # a layer of a pull that never finished
    blob.write_bytes(os.urandom(50_000))
    os.utime(blob, (old, old))
    fresh = store.blobs / ("f" * 64)  # may be a running pull's: too young to judge
    fresh.write_bytes(b"fresh")
    disk = store.disks / f"{'d' * 64}.ext4"  # of an image removed meanwhile
    disk.write_bytes(os.urandom(20_000))
    tmp = store.tmp / f"load-{_dead_pid()}-abc"  # a killed load's staging
    tmp.mkdir()
    (tmp / "blob").write_bytes(os.urandom(10_000))
    live = store.tmp / f"load-{os.getpid()}-abc"  # this process's: alive, kept
    live.mkdir()
    return {"blob": blob, "fresh": fresh, "disk": disk, "tmp": tmp, "live": live}


def test_system_prune(cli: Cli, store: Store, stocked: ImageStore) -> None:
    running = container(store, TAGGED, exited=False)
    stopped = container(store, USED, exited=True, overlay=100_000)
    killed = container(store, LOOSE, exited=False, owner=_dead_pid())  # its run was killed
    orphans = _orphans(store)
    before = du(store.blobs, store.disks, store.tmp, store.containers)
    result = cli("system", "prune", "-f")
    assert result.status == 0, result.err
    freed = before - du(store.blobs, store.disks, store.tmp, store.containers)
    containers, images, total = result.out.split("\n\n")
    assert containers.splitlines() == ["Deleted Containers:", *sorted(
        (stopped.id, killed.id), key=lambda cid: records.paths(store, cid).record.as_posix())]
    assert images.startswith("Deleted Images:\n")
    assert f"deleted: {USED.id}" in images and f"deleted: {LOOSE.id}" in images
    assert total == f"Total reclaimed space: {human_size(freed, 4)}\n"
    assert [c.id for c in records.all_containers(store)] == [running.id]
    assert ids(stocked) == {TAGGED.id}  # -a would take it too, were it not in use
    assert not orphans["blob"].exists() and not orphans["disk"].exists()
    assert not orphans["tmp"].exists()
    assert orphans["fresh"].exists() and orphans["live"].exists()
    assert stocked.base_disk(stocked.get("app:1")).exists()


def test_system_prune_all_spares_a_running_pull(cli: Cli, store: Store,
                                                stocked: ImageStore) -> None:
    orphans = _orphans(store)
    locks = store.tmp / "locks"
    locks.mkdir()
    with open(locks / ("e" * 64), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a pull downloading a layer holds it
        result = cli("system", "prune", "-a", "-f")
    assert result.status == 0, result.err
    assert ids(stocked) == set()
    assert orphans["blob"].exists() and orphans["fresh"].exists()
    assert not orphans["disk"].exists()
    assert os.listdir(store.disks) == []
    # Once the pull is over, the next prune takes what it left unnamed.
    result = cli("system", "prune", "-a", "-f")
    assert not orphans["blob"].exists()
    assert sorted(os.listdir(store.blobs)) == ["f" * 64]
