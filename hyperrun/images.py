"""The image store: load, import, list, look up and remove images, and build their base disks.

images.json (see store.py) maps references to image ids, and image ids to the manifest
digest and size; manifests, configs and layers live in store.blobs, content-addressed.
Every blob entering the store is verified against its digest while staged in store.tmp,
and only then moved in, under store.lock(), so a failed load leaves nothing behind.
"""

from __future__ import annotations

import builtins
import bz2
import contextlib
import datetime
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import re
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import reference as references
from .archive import Archive, open_archive
from .disk import build_base_disk
from .errors import HyperrunError, ImageNotFound, InvalidImage, UsageError
from .image import (
    CONFIG_MEDIA_TYPES,
    INDEX_MEDIA_TYPES,
    LAYER_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST,
    Image,
    ImageConfig,
    Layer,
)
from .layers import apply_layers
from .reference import Reference
from .staging import staging_root
from .store import Store, atomic_write

INDEX_VERSION = 1
MAX_INDEX_DEPTH = 4
MAX_JSON_BYTES = 4 << 20  # manifests and configs are small; refuse to parse giant ones
_CHUNK = 1 << 20
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_ID_PREFIX_RE = re.compile(r"^(?:sha256:)?([a-f0-9]{1,64})$")
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


def host_platform() -> tuple[str, str]:
    """(os, architecture) in OCI terms for this host, e.g. ("linux", "amd64")."""
    machine = platform.machine()
    return "linux", _GOARCH.get(machine, machine)


@dataclass(frozen=True)
class Loaded:
    """An image that a load or import put in the store, with the references it brought."""

    image: Image
    tags: tuple[Reference, ...]


@dataclass(frozen=True)
class _StagedImage:
    id: str
    manifest: str
    blobs: frozenset[str]  # manifest, config and layers
    size: int  # uncompressed, as docker reports it
    tags: tuple[Reference, ...]


@dataclass
class _Staged:
    """Blobs verified into a staging directory, and the images they make up."""

    directory: Path
    blobs: dict[str, Path] = field(default_factory=dict)
    uncompressed: dict[str, int] = field(default_factory=dict)  # layer digest -> tar size
    diff_ids: dict[str, str] = field(default_factory=dict)  # layer digest -> diff_id
    images: list[_StagedImage] = field(default_factory=list)

    def add_image(self, manifest_digest: str, tags: tuple[Reference, ...]) -> None:
        manifest = json.loads(self.blobs[manifest_digest].read_bytes())
        layers = [layer["digest"] for layer in manifest["layers"]]
        config = manifest["config"]["digest"]
        self.images.append(_StagedImage(
            id=config,
            manifest=manifest_digest,
            blobs=frozenset([manifest_digest, config, *layers]),
            size=sum(self.uncompressed[d] for d in layers),
            tags=tags,
        ))


class ImageStore:
    """Images kept in a Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- loading -------------------------------------------------------------------------

    def load(self, path: Path) -> builtins.list[Loaded]:
        """Load a `docker save` archive or an OCI image layout (directory or tar)."""
        path = Path(path)
        with open_archive(path) as archive, self._staging() as staged:
            if archive.exists("manifest.json"):
                self._stage_docker_save(archive, staged, str(path))
            elif archive.exists("index.json"):
                self._stage_oci_layout(archive, staged, str(path))
            else:
                raise InvalidImage(
                    f"{path}: neither a docker save archive nor an OCI image layout",
                    hint="expected manifest.json (docker save) or oci-layout + index.json",
                )
            if not staged.images:
                raise InvalidImage(f"{path}: contains no image")
            return self._commit(staged)

    def import_rootfs(self, tar: Path, name: str | None = None) -> Loaded:
        """Make a one-layer image of a root filesystem tarball, as `docker import` does."""
        ref = references.parse_tag(name) if name else None
        with self._staging() as staged:
            try:
                src = open(tar, "rb")
            except OSError as exc:
                raise UsageError(f"cannot read {tar}: {exc.strerror}") from None
            with src:
                layer_tmp = staged.directory / "import.tar"
                digest, size = _decompress_to(src, layer_tmp, str(tar))
            _check_tar(layer_tmp, str(tar))
            staged.blobs[digest] = layer_tmp
            staged.uncompressed[digest] = size
            staged.diff_ids[digest] = digest
            os_name, arch = host_platform()
            now = _now()
            config = {
                "architecture": arch,
                "os": os_name,
                "created": now,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [digest]},
                "history": [{"created": now, "comment": f"Imported from {Path(tar).name}"}],
            }
            layer = {"mediaType": MEDIA_OCI_LAYER, "digest": digest, "size": size}
            manifest_digest = self._stage_synthetic(staged, _dump(config), [layer])
            staged.add_image(manifest_digest, (ref,) if ref else ())
            (loaded,) = self._commit(staged)
            return loaded

    def add_pulled(self, manifest: bytes, config: bytes, tags: Sequence[Reference],
                   layer_sizes: Mapping[str, int]) -> Image:
        """Commit a pulled image whose layers are already verified into store.blobs.

        layer_sizes maps each layer digest to its uncompressed size. The manifest and
        config go through the same checks and the same commit as a load.
        """
        label = "pulled image"
        manifest_digest = _sha256(manifest)
        doc = _json(manifest, f"{label}: manifest")
        config_desc = _check_descriptor(doc.get("config") if isinstance(doc, dict) else None,
                                        label)
        if _sha256(config) != config_desc["digest"]:
            raise _mismatch(label, "config", config_desc["digest"], _sha256(config))
        diff_ids = _parse_config(config, f"{label}: config")["rootfs"]["diff_ids"]
        layers = [_check_descriptor(d, label)["digest"] for d in doc.get("layers") or []]
        if len(diff_ids) != len(layers):
            raise InvalidImage(f"{label}: config lists {len(diff_ids)} layers, "
                               f"manifest {len(layers)}")
        with self._staging() as staged:
            staged.blobs[manifest_digest] = _stage_bytes(manifest, staged.directory)
            staged.blobs[config_desc["digest"]] = _stage_bytes(config, staged.directory)
            staged.uncompressed.update({d: layer_sizes[d] for d in layers})
            staged.add_image(manifest_digest, tuple(tags))
            (loaded,) = self._commit(staged)
        return loaded.image

    # ---- queries -------------------------------------------------------------------------

    def list(self) -> list[Image]:
        """Every image, newest first (as `docker images` orders them)."""
        index = self._read_index()
        images = [self._image(image_id, index) for image_id in index["images"]]
        return sorted(images, key=lambda i: (_created_key(i.created), i.id), reverse=True)

    def get(self, text: str) -> Image:
        """Look an image up by reference, manifest digest reference, or (short) image id."""
        index = self._read_index()
        image_id = self._lookup(text, index)
        if image_id is None:
            raise ImageNotFound(text)
        return self._image(image_id, index)

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
                drop = [named]
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
        apply_layers(dest, paths)

    def _disk_path(self, image_id: str) -> Path:
        return self.store.disks / f"{image_id.removeprefix('sha256:')}.ext4"

    # ---- docker save ---------------------------------------------------------------------

    def _stage_docker_save(self, archive: Archive, staged: _Staged, label: str) -> None:
        manifest = _json(_read_small(archive, "manifest.json", label), f"{label}: manifest.json")
        if not isinstance(manifest, list):
            raise InvalidImage(f"{label}: manifest.json is not a list")
        for entry in manifest:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                    or not isinstance(entry.get("Layers"), list):
                raise InvalidImage(f"{label}: manifest.json entry lacks Config or Layers")
            config_name = entry["Config"]
            config_bytes = _read_small(archive, config_name, label)
            config_digest = _sha256(config_bytes)
            named = _digest_in_name(config_name)
            if named is not None and named != config_digest:
                raise _mismatch(label, config_name, named, config_digest)
            config = _parse_config(config_bytes, f"{label}: {config_name}")
            diff_ids = config["rootfs"]["diff_ids"]
            if len(diff_ids) != len(entry["Layers"]):
                raise InvalidImage(f"{label}: {config_name} lists {len(diff_ids)} layers, "
                                   f"manifest.json {len(entry['Layers'])}")
            layers = []
            for layer_name, diff_id in zip(entry["Layers"], diff_ids, strict=True):
                if not isinstance(layer_name, str):
                    raise InvalidImage(f"{label}: manifest.json has a non-string layer")
                digest, blob_size, media_type = self._stage_layer(
                    archive, layer_name, staged, label, diff_id, _digest_in_name(layer_name))
                layers.append({"mediaType": media_type, "digest": digest, "size": blob_size})
            tags = []
            repo_tags = entry.get("RepoTags") or []
            if not isinstance(repo_tags, list) or not all(isinstance(t, str) for t in repo_tags):
                raise InvalidImage(f"{label}: manifest.json RepoTags is not a list of names")
            for tag in repo_tags:
                try:
                    tags.append(references.parse_tag(tag))
                except UsageError as exc:
                    raise InvalidImage(f"{label}: bad RepoTag: {exc.message}") from None
            manifest_digest = self._stage_synthetic(staged, config_bytes, layers)
            staged.add_image(manifest_digest, tuple(tags))

    def _stage_layer(self, archive: Archive, name: str, staged: _Staged, label: str,
                     diff_id: str, expected: str | None) -> tuple[str, int, str]:
        """Verify a layer against its diff_id (and its digest if known); stage it."""
        with archive.open(name) as src:
            tmp, digest, size = _stage_blob(src, staged.directory, label, name)
        if expected is not None and expected != digest:
            raise _mismatch(label, name, expected, digest)
        media_type, found_diff_id, uncompressed = _diff_id(tmp, label, name)
        if found_diff_id != diff_id:
            raise _mismatch(label, f"{name} (uncompressed)", diff_id, found_diff_id)
        staged.blobs[digest] = tmp
        staged.uncompressed[digest] = uncompressed
        staged.diff_ids[digest] = found_diff_id
        return digest, size, media_type

    def _stage_synthetic(self, staged: _Staged, config_bytes: bytes,
                         layers: builtins.list[dict[str, Any]]) -> str:
        """Stage a config and an OCI manifest written for it (docker save has none)."""
        config_digest = _sha256(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": layers,
        }
        manifest_bytes = _dump(manifest)
        manifest_digest = _sha256(manifest_bytes)
        staged.blobs[config_digest] = _stage_bytes(config_bytes, staged.directory)
        staged.blobs[manifest_digest] = _stage_bytes(manifest_bytes, staged.directory)
        return manifest_digest

    # ---- OCI image layout ----------------------------------------------------------------

    def _stage_oci_layout(self, archive: Archive, staged: _Staged, label: str) -> None:
        if archive.exists("oci-layout"):
            layout = _json(_read_small(archive, "oci-layout", label), f"{label}: oci-layout")
            version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
            if not isinstance(version, str) or not version.startswith("1."):
                raise InvalidImage(f"{label}: unsupported OCI layout version {version!r}")
        index = _json(_read_small(archive, "index.json", label), f"{label}: index.json")
        descriptors = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(descriptors, list):
            raise InvalidImage(f"{label}: index.json has no manifests list")
        want = host_platform()
        for desc in descriptors:
            _check_descriptor(desc, label)
            plat = desc.get("platform")
            if isinstance(plat, dict) and (plat.get("os"), plat.get("architecture")) != want:
                continue
            tags = _oci_tags(desc, label)
            manifest_digest = self._stage_oci_manifest(archive, staged, label, desc, 0)
            staged.add_image(manifest_digest, tags)
        if not staged.images:
            raise InvalidImage(f"{label}: no image for {want[0]}/{want[1]}")

    def _stage_oci_manifest(self, archive: Archive, staged: _Staged, label: str,
                            desc: dict[str, Any], depth: int) -> str:
        """Verify and stage the manifest desc points at (choosing a platform from indexes)."""
        if depth > MAX_INDEX_DEPTH:
            raise InvalidImage(f"{label}: image indexes nested too deeply")
        data = _read_blob(archive, desc, label)
        doc = _json(data, f"{label}: {desc['digest']}")
        if not isinstance(doc, dict):
            raise InvalidImage(f"{label}: {desc['digest']} is not a JSON object")
        media_type = desc.get("mediaType") or doc.get("mediaType")
        if media_type in INDEX_MEDIA_TYPES or (media_type is None and "manifests" in doc):
            return self._stage_oci_manifest(
                archive, staged, label, _pick_platform(doc, label), depth + 1)
        if media_type not in MANIFEST_MEDIA_TYPES and not (media_type is None and "config" in doc):
            raise InvalidImage(f"{label}: {desc['digest']} has unsupported type {media_type!r}")
        config_desc = _check_descriptor(doc.get("config"), label)
        layer_descs = doc.get("layers")
        if not isinstance(layer_descs, list):
            raise InvalidImage(f"{label}: manifest {desc['digest']} has no layers list")
        if config_desc.get("mediaType") not in CONFIG_MEDIA_TYPES:
            raise InvalidImage(f"{label}: unsupported config type {config_desc.get('mediaType')!r}")
        config_bytes = _read_blob(archive, config_desc, label)
        config = _parse_config(config_bytes, f"{label}: config {config_desc['digest']}")
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(layer_descs):
            raise InvalidImage(f"{label}: config lists {len(diff_ids)} layers, "
                               f"manifest {len(layer_descs)}")
        for layer_desc, diff_id in zip(layer_descs, diff_ids, strict=True):
            _check_descriptor(layer_desc, label)
            media_type = layer_desc.get("mediaType")
            if media_type not in LAYER_MEDIA_TYPES:
                raise InvalidImage(f"{label}: unsupported layer type {media_type!r}",
                                   hint="hyperrun unpacks plain and gzip tar layers only")
            if layer_desc["digest"] in staged.diff_ids:
                if staged.diff_ids[layer_desc["digest"]] != diff_id:
                    raise _mismatch(label, layer_desc["digest"], diff_id,
                                    staged.diff_ids[layer_desc["digest"]])
                continue
            self._stage_layer(archive, _blob_name(layer_desc["digest"]), staged, label,
                              diff_id, layer_desc["digest"])
            if staged.blobs[layer_desc["digest"]].stat().st_size != layer_desc["size"]:
                raise InvalidImage(f"{label}: layer {layer_desc['digest']} has the wrong size")
        staged.blobs[config_desc["digest"]] = _stage_bytes(config_bytes, staged.directory)
        staged.blobs[desc["digest"]] = _stage_bytes(data, staged.directory)
        return desc["digest"]

    # ---- the index -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _staging(self) -> Iterator[_Staged]:
        with self.store.tempdir("load-") as tmp:
            yield _Staged(Path(tmp))

    def _commit(self, staged: _Staged) -> builtins.list[Loaded]:
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
                index["images"][image.id] = {"manifest": image.manifest, "size": image.size}
            for image in staged.images:
                for tag in image.tags:
                    index["references"][str(tag)] = image.id
            self._write_index(index)
            return [Loaded(self._image(i.id, index), i.tags) for i in staged.images]

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
        atomic_write(self.store.images_index, _dump(index, indent=True))

    def _image(self, image_id: str, index: dict[str, Any]) -> Image:
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


def _normal(text: str) -> str:
    try:
        return str(references.parse(text))
    except UsageError:
        return text


def _dump(doc: Any, indent: bool = False) -> bytes:
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


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _mismatch(label: str, name: str, expected: str, found: str) -> InvalidImage:
    return InvalidImage(
        f"{label}: {name} fails verification: expected {expected}, got {found}",
        hint="the archive is corrupt or was tampered with; nothing was loaded",
    )


def _digest_in_name(name: str) -> str | None:
    """The digest a docker-save member name states: `<hex>.json` or `blobs/sha256/<hex>`."""
    match = re.search(r"(?:^|/)(?:blobs/sha256/)?([a-f0-9]{64})(?:\.json)?$", name)
    if match and (name.endswith(".json") or "blobs/sha256/" in name):
        return "sha256:" + match.group(1)
    return None


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _check_descriptor(desc: Any, label: str) -> dict[str, Any]:
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str) \
            or not isinstance(desc.get("size"), int) or desc["size"] < 0:
        raise InvalidImage(f"{label}: malformed descriptor {str(desc)[:120]}")
    if not _DIGEST_RE.match(desc["digest"]):
        raise InvalidImage(f"{label}: unsupported digest {desc['digest'][:80]!r}",
                           hint="hyperrun verifies sha256 digests only")
    return desc


def _oci_tags(desc: dict[str, Any], label: str) -> tuple[Reference, ...]:
    annotations = desc.get("annotations") or {}
    if not isinstance(annotations, dict):
        return ()
    name = annotations.get("io.containerd.image.name") or annotations.get(
        "org.opencontainers.image.ref.name")
    # A bare ref.name ("latest", "1.0") is a tag with no repository: the image stays untagged.
    if not isinstance(name, str) or not any(c in name for c in ":/@"):
        return ()
    try:
        return (references.parse_tag(name),)
    except UsageError as exc:
        raise InvalidImage(f"{label}: bad image name annotation: {exc.message}") from None


def _pick_platform(index: dict[str, Any], label: str) -> dict[str, Any]:
    want = host_platform()
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise InvalidImage(f"{label}: image index has no manifests list")
    for desc in manifests:
        _check_descriptor(desc, label)
        plat = desc.get("platform")
        if isinstance(plat, dict) and (plat.get("os"), plat.get("architecture")) == want:
            return desc
    raise InvalidImage(f"{label}: no manifest for {want[0]}/{want[1]} in the image index")


def _parse_config(data: bytes, what: str) -> dict[str, Any]:
    config = _json(data, what)
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" \
            or not isinstance(rootfs.get("diff_ids"), list) \
            or not all(isinstance(d, str) and _DIGEST_RE.match(d) for d in rootfs["diff_ids"]):
        raise InvalidImage(f"{what}: not an image config (rootfs.diff_ids missing or invalid)")
    ImageConfig.from_json(config.get("config"))  # validates types now, not at run time
    if config.get("os", "linux") != "linux":
        raise InvalidImage(f"{what}: an image for {config['os']!r}; hyperrun runs linux images")
    return config


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InvalidImage(f"{what}: invalid JSON: {exc}") from None


def _read_small(archive: Archive, name: str, label: str) -> bytes:
    try:
        with archive.open(name) as fh:
            data = fh.read(MAX_JSON_BYTES + 1)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise InvalidImage(f"{label}: cannot read {name}: {exc}") from None
    if len(data) > MAX_JSON_BYTES:
        raise InvalidImage(f"{label}: {name} is implausibly large")
    return data


def _read_blob(archive: Archive, desc: dict[str, Any], label: str) -> bytes:
    """A small blob (manifest, index, config), verified against its descriptor."""
    name = _blob_name(desc["digest"])
    data = _read_small(archive, name, label)
    found = _sha256(data)
    if found != desc["digest"]:
        raise _mismatch(label, name, desc["digest"], found)
    if len(data) != desc["size"]:
        raise InvalidImage(f"{label}: {name} is {len(data)} bytes, descriptor says {desc['size']}")
    return data


def _stage_bytes(data: bytes, directory: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=directory)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return Path(tmp)


def _stage_blob(src: IO[bytes], directory: Path, label: str, name: str) -> tuple[Path, str, int]:
    """Copy src into directory, hashing it on the way; (path, digest, size)."""
    fd, tmp = tempfile.mkstemp(dir=directory)
    sha = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                sha.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise InvalidImage(f"{label}: cannot read {name}: {exc}") from None
    return Path(tmp), "sha256:" + sha.hexdigest(), size


def layer_diff_id(path: Path, label: str) -> tuple[str, int]:
    """(diff_id, uncompressed size) of a plain or gzip layer blob; zstd is refused."""
    _, diff_id, size = _diff_id(path, label, path.name)
    return diff_id, size


class LayerDigest:
    """The diff_id of a layer blob, computed from chunks as they stream in.

    zlib and hashlib release the GIL on large buffers, so pulls hashing layers on
    several threads use several cores, and no second pass over the file is needed.
    """

    def __init__(self, label: str, name: str) -> None:
        self.label, self.name = label, name
        self.media_type: str | None = None
        self._sha = hashlib.sha256()
        self._size = 0
        self._head = b""
        self._inflater: Any = None
        self._inside = False  # a gzip member has started and not ended

    def update(self, chunk: bytes) -> None:
        if self.media_type is None:
            self._head += chunk
            if len(self._head) < len(_ZSTD_MAGIC):
                return
            chunk, self._head = self._head, b""
            self._detect(chunk)
        if self._inflater is None:
            self._sha.update(chunk)
            self._size += len(chunk)
            return
        try:
            while chunk:
                self._inside = True
                data = self._inflater.decompress(chunk)
                self._sha.update(data)
                self._size += len(data)
                chunk = b""
                if self._inflater.eof:  # gzip allows several members back to back
                    chunk = self._inflater.unused_data
                    self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    self._inside = False
        except zlib.error as exc:
            raise self._invalid(str(exc)) from None

    def _detect(self, head: bytes) -> None:
        if head.startswith(_ZSTD_MAGIC):
            raise InvalidImage(f"{self.label}: layer {self.name} is zstd-compressed",
                               hint="hyperrun unpacks plain and gzip tar layers only")
        if head.startswith(_GZIP_MAGIC):
            self.media_type = MEDIA_OCI_LAYER_GZIP
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            self.media_type = MEDIA_OCI_LAYER

    def finish(self) -> tuple[str, int]:
        """(diff_id, uncompressed size) once every chunk has been given."""
        if self.media_type is None:  # a blob shorter than the longest magic number
            head, self._head = self._head, b""
            self._detect(head)
            self.update(head)
        if self._inside:
            raise self._invalid("compressed data ended before the end-of-stream marker")
        return "sha256:" + self._sha.hexdigest(), self._size

    def _invalid(self, why: str) -> InvalidImage:
        return InvalidImage(f"{self.label}: layer {self.name} is not valid gzip: {why}")


def _diff_id(path: Path, label: str, name: str) -> tuple[str, str, int]:
    """(media type, diff_id, uncompressed size) of a layer blob."""
    digest = LayerDigest(label, name)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    diff_id, size = digest.finish()
    assert digest.media_type is not None
    return digest.media_type, diff_id, size


def _decompress_to(src: IO[bytes], dest: Path, label: str) -> tuple[str, int]:
    """Write the seekable src to dest uncompressed (gzip, bzip2, xz or plain); (digest, size)."""
    head = src.read(6)
    src.seek(0)
    stream: io.BufferedIOBase | IO[bytes]
    if head.startswith(_GZIP_MAGIC):
        stream = gzip.GzipFile(fileobj=src, mode="rb")
    elif head.startswith(_BZIP2_MAGIC):
        stream = bz2.BZ2File(src)
    elif head.startswith(_XZ_MAGIC):
        stream = lzma.LZMAFile(src)
    elif head.startswith(_ZSTD_MAGIC):
        raise InvalidImage(f"{label} is zstd-compressed", hint="decompress it first (unzstd)")
    else:
        stream = src
    sha, size = hashlib.sha256(), 0
    try:
        with open(dest, "wb") as out:
            while chunk := stream.read(_CHUNK):
                sha.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise InvalidImage(f"{label}: corrupt compressed data: {exc}") from None
    return "sha256:" + sha.hexdigest(), size


def _check_tar(path: Path, label: str) -> None:
    """Reject a file that is not a tar archive before it becomes an image."""
    try:
        with tarfile.open(path, "r:") as tar:
            for _ in tar:
                pass
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidImage(f"{label} is not a tar archive: {exc}",
                           hint="`hyperrun import` takes a root filesystem tarball") from None


def humanize_duration(seconds: float) -> str:
    """docker's HumanDuration (go-units), used in the CREATED column."""
    seconds = int(seconds)
    minutes, hours = round(seconds / 60), round(seconds / 3600)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    if minutes == 1:
        return "About a minute"
    if seconds < 3600:
        return f"{seconds // 60} minutes"
    if hours == 1:
        return "About an hour"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} hours"
    if seconds < 14 * 86400:
        return f"{seconds // 86400} days"
    if seconds < 60 * 86400:
        return f"{seconds // (7 * 86400)} weeks"
    if seconds < 730 * 86400:
        return f"{seconds // (30 * 86400)} months"
    return f"{seconds // (365 * 86400)} years"


def human_size(size: float) -> str:
    """docker's HumanSizeWithPrecision(size, 3): decimal units, e.g. `4.26MB`."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.3g}{units[i]}"


def iter_rows(images: Iterable[Image]) -> Iterator[tuple[str, str, Image]]:
    """(REPOSITORY, TAG, image) rows as `docker images` lists them; untagged as <none>."""
    for image in images:
        if not image.references:
            yield "<none>", "<none>", image
            continue
        tagged = {ref.name for ref in image.references if ref.tag}
        for ref in image.references:
            # A digest-only reference shows as <none> only if its repository has no tag here.
            if ref.tag or ref.name not in tagged:
                yield ref.familiar_name, ref.tag or "<none>", image
                tagged.add(ref.name)

