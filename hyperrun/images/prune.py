"""Removing images nobody uses, and files of the store that no image names any more.

Images go through ImageStore.remove, one reference at a time as docker's prune does, so
a blob another image shares stays, and an image a container starts using meanwhile is
refused rather than untagged. Orphans are what interrupted or killed commands leave:
blobs no image names (layers of a pull that never finished), base disks of removed
images, and temporaries whose owner process is gone.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hyperrun.errors import ImageNotFound, UsageError
from hyperrun.images import staging
from hyperrun.images.disk import TEMP_PREFIX as DISK_TEMP_PREFIX
from hyperrun.images.model import Image
from hyperrun.images.store import ImageStore
from hyperrun.images.usage import allocated, image_files
from hyperrun.store import sweep_owned

# A blob no image names may be a layer a running pull has just finished; it joins an image
# when the pull commits. Younger ones are left for a later prune.
ORPHAN_MIN_AGE = 3600.0
_OWNED_RE = re.compile(r"^([a-z]+-)\d+-")


@dataclass(frozen=True)
class Pruned:
    """What a prune did: ("Untagged"|"Deleted", what) in order, and the bytes it freed."""

    actions: tuple[tuple[str, str], ...]
    reclaimed: int


def prune_images(images: ImageStore, *, dangling_only: bool,
                 users: Callable[[str], Sequence[str]]) -> Pruned:
    """Remove images no container uses: untagged ones only, or all with dangling_only False.

    Untagged means without a tag; a digest reference alone (repo@sha256:...) still counts
    as dangling, as in docker.
    """
    before = image_files(images)
    actions: list[tuple[str, str]] = []
    for image in images.list():
        if users(image.id):
            continue
        if dangling_only and any(ref.tag for ref in image.references):
            continue
        actions += _remove(images, image, users)
    return Pruned(tuple(actions), max(0, before - image_files(images)))


def _remove(images: ImageStore, image: Image,
            users: Callable[[str], Sequence[str]]) -> list[tuple[str, str]]:
    if not image.references:
        texts = [image.id]
    else:  # tags first: untagging a repository's last tag takes its digests along
        texts = [str(r) for r in sorted(image.references, key=lambda r: r.tag is None)]
    done: list[tuple[str, str]] = []
    for text in texts:
        try:
            done += images.remove(text, users=users)
        except ImageNotFound:
            continue  # gone with an earlier reference, or removed by someone else
        except UsageError:
            break  # a container started using it meanwhile: it stays
    return done


def remove_orphans(images: ImageStore, *, keep_blobs: bool = False) -> int:
    """Delete blobs, base disks and temporaries that nothing names; returns bytes freed.

    keep_blobs spares unnamed blobs altogether (the caller knows a pull is running).
    """
    store = images.store
    before = image_files(images) + _tmp_usage(images)
    now = time.time()
    with store.lock():
        by_image = images.blobs_by_image()
        named = set().union(*by_image.values())
        for entry in _entries(store.blobs):
            if keep_blobs or "sha256:" + entry.name in named:
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime < ORPHAN_MIN_AGE:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
    with store.lock("disks"):
        ids = set(images.blobs_by_image())
        sweep_owned(store.disks, DISK_TEMP_PREFIX)
        for entry in _entries(store.disks):
            name = entry.name
            if name.endswith(".ext4") and "sha256:" + name[:-len(".ext4")] not in ids:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
    staging.sweep(store)  # mounted staging trees are unmounted first
    prefixes = {m.group(1) for e in _entries(store.tmp) if (m := _OWNED_RE.match(e.name))}
    for prefix in sorted(prefixes):
        sweep_owned(store.tmp, prefix)
    return max(0, before - image_files(images) - _tmp_usage(images))


def _tmp_usage(images: ImageStore) -> int:
    return allocated(images.store.tmp)


def _entries(directory: os.PathLike[str] | str) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(directory))
    except OSError:
        return []
