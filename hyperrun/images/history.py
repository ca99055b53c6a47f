"""An image's history, as its config records it, with the size of each step's layer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hyperrun.errors import InvalidImage
from hyperrun.images.compression import layer_diff_id
from hyperrun.images.model import Image
from hyperrun.images.store import ImageStore


@dataclass(frozen=True)
class Step:
    """One history entry; empty steps (ENV, CMD, ...) made no layer and have size 0."""

    created: str | None
    created_by: str
    comment: str
    size: int
    empty_layer: bool


def history(images: ImageStore, image: Image) -> list[Step]:
    """image's steps, newest first, as `docker history` lists them.

    A config without history has no steps (docker shows none either). Every non-empty
    step takes the next layer in order; more such steps than layers is a broken image.
    """
    try:
        config = json.loads(images.store.blob(image.id).read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidImage(f"image {image.short_id} is damaged in the store: {exc}",
                           hint="remove it with `hyperrun rmi` and load it again") from None
    entries = config.get("history") if isinstance(config, dict) else None
    if not isinstance(entries, list):
        return []
    sizes = _layer_sizes(images, image)
    steps = []
    layer = 0
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        empty = entry.get("empty_layer") is True
        size = 0
        if not empty:
            if layer >= len(sizes):
                raise InvalidImage(
                    f"image {image.short_id}: its history has more layers than its rootfs "
                    f"({len(sizes)})", hint="the image's config is malformed")
            size = sizes[layer]
            layer += 1
        steps.append(Step(_text(entry, "created") or None, _text(entry, "created_by"),
                          _text(entry, "comment"), size, empty))
    return steps[::-1]


def _layer_sizes(images: ImageStore, image: Image) -> list[int]:
    """Uncompressed layer sizes: from the index, or (images stored before it kept them) by
    inflating each layer once."""
    recorded = images.layer_sizes(image.id)
    if recorded is not None and len(recorded) == len(image.layers) \
            and all(isinstance(s, int) for s in recorded):
        return recorded
    sizes = []
    for layer in image.layers:
        try:
            sizes.append(layer_diff_id(images.store.blob(layer.digest), image.short_id)[1])
        except FileNotFoundError:
            raise InvalidImage(f"layer {layer.digest} of {image.short_id} is missing",
                               hint="remove the image and load it again") from None
    return sizes


def _text(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    return value if isinstance(value, str) else ""
