"""How much disk the image store takes, counted by allocated blocks as `du` counts them.

Base disks are sparse (a 2 GiB ext4 file may hold a few MiB), so apparent sizes would
overstate them many times over; st_blocks is what removing a file gives back.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from hyperrun.images.store import ImageStore


@dataclass(frozen=True)
class Usage:
    """One row of `system df`: how many, how many in use, bytes, bytes a prune could free."""

    total: int
    active: int
    size: int
    reclaimable: int


def allocated(path: Path) -> int:
    """Bytes allocated to path, a file or a directory tree (symlinks are not followed)."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    total = st.st_blocks * 512
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
                except OSError:
                    continue
    return total


def image_files(images: ImageStore) -> int:
    """Bytes of every blob and base disk in the store, whether an image names it or not."""
    return allocated(images.store.blobs) + allocated(images.store.disks)


def image_usage(images: ImageStore, active: Collection[str]) -> Usage:
    """Images' row of `system df`; active holds the ids of images some container uses.

    Everything on disk counts, blobs left by interrupted pulls included; what is
    reclaimable is all but the blobs and base disks that active images need.
    """
    store = images.store
    with store.lock():
        by_image = images.blobs_by_image()
        sizes = _sizes(store.blobs, "sha256:", "")
        disks = _sizes(store.disks, "sha256:", ".ext4")
    needed = set().union(*(by_image[i] for i in active if i in by_image))
    size = sum(sizes.values()) + sum(disks.values())
    kept = sum(sizes.get(d, 0) for d in needed) + sum(disks.get(i, 0) for i in active)
    in_use = sum(1 for i in by_image if i in active)
    return Usage(len(by_image), in_use, size, size - kept)


def _sizes(directory: Path, prefix: str, suffix: str) -> dict[str, int]:
    """prefix + name (suffix removed) -> allocated bytes, for the files of directory."""
    found = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return {}
    for entry in entries:
        try:
            blocks = entry.stat(follow_symlinks=False).st_blocks
        except OSError:
            continue
        name = entry.name.removesuffix(suffix) if suffix and entry.name.endswith(suffix) \
            else entry.name
        found[prefix + name] = blocks * 512
    return found
