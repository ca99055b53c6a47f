"""The image store: images.json and the blobs it names; look-up, removal, base disks.

images.json (see hyperrun/store.py) maps references to image ids, and image ids to the
manifest digest and size; manifests, configs and layers live in store.blobs,
content-addressed. Loads and pulls (images/load.py) stage verified blobs in store.tmp
and hand them to `commit`, which moves them in under store.lock(), so a failed load
leaves nothing behind.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperrun import reference as references
from hyperrun.errors import HyperrunError, ImageNotFound, InvalidImage, UsageError
from hyperrun.images.disk import build_base_disk
from hyperrun.images.layers import apply_layers
from hyperrun.images.limits import SizeBudget
from hyperrun.images.model import Image, ImageConfig, Layer
from hyperrun.images.staging import staging_root
from hyperrun.reference import Reference
from hyperrun.store import Store, atomic_write

INDEX_VERSION = 1
_ID_PREFIX_RE = re.compile(r"^(?:sha256:)?([a-f0-9]{1,64})$")


@dataclass(frozen=True)
class Loaded:
    """An image that a load or import put in the store, with the references it brought."""

    image: Image
    tags: tuple[Reference, ...]


@dataclass(frozen=True)
class StagedImage:
    id: str
    manifest: str
    blobs: frozenset[str]  # manifest, config and layers
    size: int  # uncompressed, as docker reports it
    tags: tuple[Reference, ...]
    layer_sizes: tuple[int, ...] = ()  # uncompressed, in manifest order (`history` shows them)


@dataclass
class Staged:
    """Blobs verified into a staging directory, and the images they make up."""

    directory: Path
    blobs: dict[str, Path] = field(default_factory=dict)
    uncompressed: dict[str, int] = field(default_factory=dict)  # layer digest -> tar size
    diff_ids: dict[str, str] = field(default_factory=dict)  # layer digest -> diff_id
    images: list[StagedImage] = field(default_factory=list)

    def add_image(self, manifest_digest: str, tags: tuple[Reference, ...]) -> None:
        manifest = json.loads(self.blobs[manifest_digest].read_bytes())
        layers = [layer["digest"] for layer in manifest["layers"]]
        config = manifest["config"]["digest"]
        self.images.append(StagedImage(
            id=config,
            manifest=manifest_digest,
            blobs=frozenset([manifest_digest, config, *layers]),
            size=sum(self.uncompressed[d] for d in layers),
            tags=tags,
            layer_sizes=tuple(self.uncompressed[d] for d in layers),
        ))


class ImageStore:
    """Images kept in a Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- queries -------------------------------------------------------------------------

    def list(self) -> list[Image]:
        """Every image, newest first (as `docker images` orders them)."""
        index = self._read_index()
        images = [self.image_from_index(image_id, index) for image_id in index["images"]]
        return sorted(images, key=lambda i: (_created_key(i.created), i.id), reverse=True)

    def get(self, text: str) -> Image:
        """Look an image up by reference, manifest digest reference, or (short) image id."""
        index = self._read_index()
        image_id = self._lookup(text, index)
        if image_id is None:
            raise ImageNotFound(text)
        return self.image_from_index(image_id, index)

    def _lookup(self, text: str, index: dict[str, Any]) -> str | None:
        parse_error: UsageError | None = None
        try:
            ref = references.parse(text)
        except UsageError as exc:
            ref, parse_error = None, exc
        if ref is not None:
            if str(ref) in index["references"]:
                return index["references"][str(ref)]
            if ref.digest is not None and ref.tag is not None:
                # `repo:tag@digest`: the digest decides and the tag is ignored, as in docker.
                by_digest = str(references.Reference(ref.domain, ref.path, None, ref.digest))
                if by_digest in index["references"]:
                    return index["references"][by_digest]
            if ref.digest is not None:
                for image_id, entry in index["images"].items():
                    if entry["manifest"] == ref.digest and any(
                        references.parse(r, default_tag=False).name == ref.name
                        for r, i in index["references"].items() if i == image_id
                    ):
                        return image_id
        match = _ID_PREFIX_RE.match(text)
        if match:
            hits = [i for i in index["images"] if i[len("sha256:"):].startswith(match.group(1))]
            if len(hits) > 1:
                raise UsageError(f"ambiguous image id prefix {text!r}: {len(hits)} images match",
                                 hint="give more digits of the IMAGE ID")
            if hits:
                return hits[0]
            return None
        if parse_error is not None:
            raise parse_error
        return None

    def tag(self, source: str, target: str) -> Image:
        """Point the tag target (NAME[:TAG]) at the image source names, as `docker tag`.

        A tag that named another image moves; that image keeps its blobs even if it is
        left untagged (docker shows it as <none>, and `image prune` removes it).
        """
        ref = references.parse_tag(target)
        with self.store.lock():
            index = self._read_index()
            image_id = self._lookup(source, index)
            if image_id is None:
                raise ImageNotFound(source)
            index["references"][str(ref)] = image_id
            self._write_index(index)
            return self.image_from_index(image_id, index)

    def blobs_by_image(self) -> dict[str, set[str]]:
        """image id -> the blobs it needs, for every image (consistent under store.lock())."""
        index = self._read_index()
        return {image_id: self._image_blobs(image_id, index) for image_id in index["images"]}

    def layer_sizes(self, image_id: str) -> builtins.list[int] | None:
        """The uncompressed size of each layer of image_id, if the index recorded them."""
        entry = self._read_index()["images"].get(image_id, {})
        sizes = entry.get("layer_sizes")
        return sizes if isinstance(sizes, list) else None

    # ---- removal -------------------------------------------------------------------------

    def remove(
        self, text: str, *, force: bool = False,
        users: Callable[[str], Sequence[str]] | None = None,
    ) -> builtins.list[tuple[str, str]]:
        """Untag or delete an image as `docker rmi` does; returns ("Untagged"|"Deleted", what).

        By NAME[:TAG], only that tag goes, and the image with its last tag. By id (or
        digest), every tag goes and the image with them; if the tags span several
        repositories that takes force, as in docker. users(image_id) names the containers
        using an image: such an image is never deleted; with force it is only untagged.
        """
        actions: builtins.list[tuple[str, str]] = []
        with self.store.lock():
            index = self._read_index()
            image_id = self._lookup(text, index)
            if image_id is None:
                raise ImageNotFound(text)
            refs = sorted(r for r, i in index["references"].items() if i == image_id)
            named = _normal(text)
            if named in refs:
                drop = [named, *_orphaned_digest_refs(named, refs)]
            else:
                repos = {references.parse(r, default_tag=False).name for r in refs}
                if len(repos) > 1 and not force:
                    raise UsageError(
                        f"unable to delete {image_id[7:19]} (must be forced) - "
                        "image is referenced in multiple repositories",
                        hint="remove it by NAME:TAG, or pass -f to remove every tag",
                    )
                drop = refs
            for r in drop:
                del index["references"][r]
                actions.append(("Untagged", references.parse(r, default_tag=False).familiar))
            deleted = image_id not in index["references"].values()
            in_use = list(users(image_id)) if users is not None and deleted else []
            if in_use and not force:
                raise UsageError(
                    f"unable to delete {image_id[7:19]} (must be forced) - "
                    f"image is being used by container {in_use[0][:12]}",
                    hint="remove the container first",
                )
            if in_use:
                deleted = False
            if deleted:
                doomed = self._image_blobs(image_id, index) - self._blobs_in_use(index, image_id)
                del index["images"][image_id]
            self._write_index(index)
            if deleted:
                for digest in sorted(doomed):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.store.blob(digest))
                actions.append(("Deleted", image_id))
        if deleted:
            with self.store.lock("disks"):
                if image_id not in self._read_index()["images"]:
                    with contextlib.suppress(FileNotFoundError):
                        self._disk_path(image_id).unlink()
        return actions

    # ---- disks ---------------------------------------------------------------------------

    def base_disk(self, image: Image) -> Path:
        """The read-only ext4 base disk of image, built on first use and cached."""
        path = self._disk_path(image.id)
        if path.exists():
            return path
        with self.store.lock("disks"):
            if path.exists():
                return path
            with staging_root(self.store, image.size) as root:
                self.build_rootfs(image, root)
                build_base_disk(root, path)
        return path

    def build_rootfs(self, image: Image, dest: Path) -> None:
        """Apply image's layers, in order, into the directory dest."""
        paths = []
        for layer in image.layers:
            blob = self.store.blob(layer.digest)
            if not blob.exists():
                raise InvalidImage(f"layer {layer.digest} of {image.short_id} is missing",
                                   hint="remove the image and load it again")
            paths.append((layer.digest, blob))
        dest.mkdir(mode=0o755, exist_ok=True)
        apply_layers(dest, paths, budget=SizeBudget(image.short_id), where=self.store.root)

    def _disk_path(self, image_id: str) -> Path:
        return self.store.disks / f"{image_id.removeprefix('sha256:')}.ext4"

    # ---- the index -----------------------------------------------------------------------

    def commit(self, staged: Staged) -> builtins.list[Loaded]:
        with self.store.lock():
            index = self._read_index()
            # An image already in the store keeps its manifest; only its tags move.
            new = {i.id: i for i in staged.images if i.id not in index["images"]}
            for digest in sorted(set().union(*(i.blobs for i in new.values()))):
                dest = self.store.blob(digest)
                if not dest.exists():
                    if digest not in staged.blobs:  # a pulled layer an `rmi` just deleted
                        raise InvalidImage(f"blob {digest} vanished from the store",
                                           hint="pull the image again")
                    os.chmod(staged.blobs[digest], 0o644)
                    os.replace(staged.blobs[digest], dest)
            for image in new.values():
                index["images"][image.id] = {"manifest": image.manifest, "size": image.size,
                                             "layer_sizes": list(image.layer_sizes)}
            for image in staged.images:
                for tag in image.tags:
                    index["references"][str(tag)] = image.id
            self._write_index(index)
            return [Loaded(self.image_from_index(i.id, index), i.tags) for i in staged.images]

    def _read_index(self) -> dict[str, Any]:
        try:
            data = json.loads(self.store.images_index.read_bytes())
        except FileNotFoundError:
            return {"version": INDEX_VERSION, "references": {}, "images": {}}
        except ValueError as exc:
            raise HyperrunError(f"{self.store.images_index} is corrupt: {exc}",
                                hint="restore it or remove it and load the images again") from None
        if data.get("version") != INDEX_VERSION:
            raise HyperrunError(f"{self.store.images_index}: unknown version {data.get('version')}")
        return data

    def _write_index(self, index: dict[str, Any]) -> None:
        atomic_write(self.store.images_index, dump_json(index, indent=True))

    def image_from_index(self, image_id: str, index: dict[str, Any]) -> Image:
        entry = index["images"][image_id]
        try:
            manifest = json.loads(self.store.blob(entry["manifest"]).read_bytes())
            config = json.loads(self.store.blob(image_id).read_bytes())
        except (OSError, ValueError) as exc:
            raise InvalidImage(f"image {image_id[7:19]} is damaged in the store: {exc}",
                               hint="remove it with `hyperrun rmi` and load it again") from None
        diff_ids = config["rootfs"]["diff_ids"]
        layers = tuple(
            Layer(d["digest"], d["mediaType"], d["size"], diff_id)
            for d, diff_id in zip(manifest["layers"], diff_ids, strict=True)
        )
        refs = tuple(references.parse(r, default_tag=False)
                     for r in sorted(r for r, i in index["references"].items() if i == image_id))
        return Image(
            id=image_id,
            manifest_digest=entry["manifest"],
            references=refs,
            layers=layers,
            config=ImageConfig.from_json(config.get("config")),
            created=config.get("created"),
            size=entry["size"],
            architecture=config.get("architecture", ""),
            os=config.get("os", ""),
        )

    def _image_blobs(self, image_id: str, index: dict[str, Any]) -> set[str]:
        manifest_digest = index["images"][image_id]["manifest"]
        blobs = {manifest_digest, image_id}
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            manifest = json.loads(self.store.blob(manifest_digest).read_bytes())
            blobs.update(layer["digest"] for layer in manifest["layers"])
        return blobs

    def _blobs_in_use(self, index: dict[str, Any], exclude: str) -> set[str]:
        used: set[str] = set()
        for image_id in index["images"]:
            if image_id != exclude:
                used |= self._image_blobs(image_id, index)
        return used


# ---- helpers -------------------------------------------------------------------------------


def _orphaned_digest_refs(removed: str, refs: Sequence[str]) -> builtins.list[str]:
    """repo@digest references that go with repo's last tag, as docker's rmi drops them.

    A pull records `repo:tag` and `repo@sha256:...`; untagging the last tag of repo
    would otherwise leave the image behind as `<none>` under its digest.
    """
    ref = references.parse(removed, default_tag=False)
    if ref.tag is None:  # a digest reference removed on its own takes nothing along
        return []
    name = ref.name
    parsed = [(r, references.parse(r, default_tag=False)) for r in refs if r != removed]
    if any(p.tag and p.name == name for _, p in parsed):
        return []
    return [r for r, p in parsed if p.digest and not p.tag and p.name == name]


def _normal(text: str) -> str:
    try:
        return str(references.parse(text))
    except UsageError:
        return text


def dump_json(doc: Any, indent: bool = False) -> bytes:
    if indent:
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _created_key(created: str | None) -> float:
    parsed = parse_created(created)
    return parsed.timestamp() if parsed else 0.0


def parse_created(created: str | None) -> datetime.datetime | None:
    """Parse an RFC 3339 `created` (Go writes nanoseconds, Python reads micro); None if unset."""
    if not created:
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", created)
    if not match:
        return None
    base, fraction, zone = match.groups()
    text = base + (f".{(fraction + '000000')[:6]}" if fraction else "")
    text += "+00:00" if zone == "Z" else zone
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None

