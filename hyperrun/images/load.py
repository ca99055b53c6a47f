"""Loading images into the store: `docker save` archives, OCI layouts, rootfs tarballs, pulls.

Every blob is verified against its digest (and every layer against the config's
diff_id) while it is staged in store.tmp; ImageStore.commit then moves the lot in at once.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from hyperrun import reference as references
from hyperrun.digest import is_hex64, sha256
from hyperrun.errors import InvalidImage, UsageError
from hyperrun.images import compression
from hyperrun.images import manifest as documents
from hyperrun.images.archive import Archive, open_archive
from hyperrun.images.compression import CHUNK, check_tar, copy_hashed, decompress_to
from hyperrun.images.limits import SizeBudget, ensure_room, is_no_space, no_space, too_large
from hyperrun.images.manifest import Descriptor, Index, Platform
from hyperrun.images.model import MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER, MEDIA_OCI_MANIFEST, Image
from hyperrun.images.store import ImageStore, Loaded, Staged, dump_json
from hyperrun.images.tarsafe import READ_ERRORS, first_line
from hyperrun.images.validate import (
    MAX_JSON_BYTES,
    host_platform,
    mismatch,
    oci_tags,
    parse_config,
    parse_json,
)
from hyperrun.reference import Reference


class Loader:
    """Puts images into an ImageStore."""

    def __init__(self, images: ImageStore) -> None:
        self.images = images
        self.store = images.store

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
                digest, size = decompress_to(src, layer_tmp, str(tar), SizeBudget(str(tar)),
                                             self.store.root)
            check_tar(layer_tmp, str(tar), SizeBudget(str(tar)))
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
            manifest_digest = self._stage_synthetic(staged, dump_json(config), [layer])
            staged.add_image(manifest_digest, (ref,) if ref else ())
            (loaded,) = self._commit(staged)
            return loaded

    def add_pulled(self, manifest: bytes, config: bytes, tags: Sequence[Reference],
                   layer_sizes: Mapping[str, int]) -> Image:
        """Commit a pulled image whose layers are already verified into store.blobs.

        layer_sizes maps each layer digest to its uncompressed size. The manifest and
        config go through the same checks and the same commit as a load.
        """
        label = tags[0].familiar if tags else "pulled image"
        manifest_digest = sha256(manifest)
        doc = documents.parse(manifest, None, label)
        if isinstance(doc, Index):
            raise InvalidImage(f"{label}: expected an image manifest, not an index")
        if sha256(config) != doc.config.digest:
            raise mismatch(label, "config", doc.config.digest, sha256(config))
        parse_config(config, f"{label}: config", len(doc.layers))
        layers = [d.digest for d in doc.layers]
        budget = SizeBudget(label)
        for digest in layers:  # each layer counts as often as it is applied
            budget.charge(layer_sizes[digest])
        with self._staging() as staged:
            staged.blobs[manifest_digest] = _stage_bytes(manifest, staged.directory)
            staged.blobs[doc.config.digest] = _stage_bytes(config, staged.directory)
            staged.uncompressed.update({d: layer_sizes[d] for d in layers})
            staged.add_image(manifest_digest, tuple(tags))
            (loaded,) = self._commit(staged)
        return loaded.image

    # ---- docker save ---------------------------------------------------------------------

    def _stage_docker_save(self, archive: Archive, staged: Staged, label: str) -> None:
        manifest = parse_json(_read_small(archive, "manifest.json", label),
                              f"{label}: manifest.json")
        if not isinstance(manifest, list):
            raise InvalidImage(f"{label}: manifest.json is not a list")
        by_name: dict[str, tuple[str, int, str]] = {}  # layers staged: name -> digest, ...
        for entry in manifest:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                    or not isinstance(entry.get("Layers"), list):
                raise InvalidImage(f"{label}: manifest.json entry lacks Config or Layers")
            config_name = entry["Config"]
            config_bytes = _read_small(archive, config_name, label)
            config_digest = sha256(config_bytes)
            named = _digest_in_name(config_name)
            if named is not None and named != config_digest:
                raise mismatch(label, config_name, named, config_digest)
            documents.check_layer_count(len(entry["Layers"]), f"{label}: manifest.json")
            config = parse_config(config_bytes, f"{label}: {config_name[:120]}",
                                  len(entry["Layers"]))
            diff_ids = config["rootfs"]["diff_ids"]
            budget = SizeBudget(label)
            layers = []
            for layer_name, diff_id in zip(entry["Layers"], diff_ids, strict=True):
                if not isinstance(layer_name, str):
                    raise InvalidImage(f"{label}: manifest.json has a non-string layer")
                if layer_name in by_name:  # listed again: staged once, counted each time
                    digest, blob_size, media_type = by_name[layer_name]
                    if staged.diff_ids[digest] != diff_id:
                        raise mismatch(label, f"{layer_name[:120]} (uncompressed)", diff_id,
                                       staged.diff_ids[digest])
                    budget.charge(staged.uncompressed[digest])
                else:
                    digest, blob_size, media_type = by_name[layer_name] = self._stage_layer(
                        archive, layer_name, staged, label, diff_id,
                        _digest_in_name(layer_name), budget)
                layers.append({"mediaType": media_type, "digest": digest, "size": blob_size})
            tags = []
            repo_tags = entry.get("RepoTags") or []
            if not isinstance(repo_tags, list) or not all(isinstance(t, str) for t in repo_tags):
                raise InvalidImage(f"{label}: manifest.json RepoTags is not a list of names")
            for tag in repo_tags:
                try:
                    tags.append(references.parse_tag(tag))
                except UsageError as exc:
                    raise InvalidImage(f"{label}: bad RepoTag: {exc.message[:200]}") from None
            manifest_digest = self._stage_synthetic(staged, config_bytes, layers)
            staged.add_image(manifest_digest, tuple(tags))

    def _stage_layer(self, archive: Archive, name: str, staged: Staged, label: str,
                     diff_id: str, expected: str | None,
                     budget: SizeBudget) -> tuple[str, int, str]:
        """Verify a layer against its diff_id (and its digest if known); stage it.

        Its uncompressed bytes are charged to budget as they are inflated.
        """
        if expected is not None and expected in staged.diff_ids:  # staged for another image
            if staged.diff_ids[expected] != diff_id:
                raise mismatch(label, name[:120], diff_id, staged.diff_ids[expected])
            budget.charge(staged.uncompressed[expected])
            return expected, staged.blobs[expected].stat().st_size, _media_type(staged, expected)
        declared = archive.size(name)
        if declared > budget.limit:
            raise too_large(label, budget.limit)
        ensure_room(staged.directory, declared, self.store.root)
        with archive.open(name) as src:
            tmp, digest, size = _stage_blob(src, staged.directory, label, name, self.store.root)
        if expected is not None and expected != digest:
            raise mismatch(label, name[:120], expected, digest)
        if digest in staged.diff_ids:  # the same layer under another name: keep one copy
            tmp.unlink()
            return self._stage_layer(archive, name, staged, label, diff_id, digest, budget)
        media_type, found_diff_id, uncompressed = compression.diff_id(tmp, label, name[:120],
                                                                      budget)
        if found_diff_id != diff_id:
            raise mismatch(label, f"{name[:120]} (uncompressed)", diff_id, found_diff_id)
        staged.blobs[digest] = tmp
        staged.uncompressed[digest] = uncompressed
        staged.diff_ids[digest] = found_diff_id
        return digest, size, media_type

    def _stage_synthetic(self, staged: Staged, config_bytes: bytes,
                         layers: builtins.list[dict[str, Any]]) -> str:
        """Stage a config and an OCI manifest written for it (docker save has none)."""
        config_digest = sha256(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": layers,
        }
        manifest_bytes = dump_json(manifest)
        manifest_digest = sha256(manifest_bytes)
        staged.blobs[config_digest] = _stage_bytes(config_bytes, staged.directory)
        staged.blobs[manifest_digest] = _stage_bytes(manifest_bytes, staged.directory)
        return manifest_digest

    # ---- OCI image layout ----------------------------------------------------------------

    def _stage_oci_layout(self, archive: Archive, staged: Staged, label: str) -> None:
        if archive.exists("oci-layout"):
            layout = parse_json(_read_small(archive, "oci-layout", label), f"{label}: oci-layout")
            version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
            if not isinstance(version, str) or not version.startswith("1."):
                raise InvalidImage(f"{label}: unsupported OCI layout version {str(version)[:40]!r}")
        index = documents.parse(_read_small(archive, "index.json", label), None,
                                f"{label}: index.json")
        if not isinstance(index, Index):
            raise InvalidImage(f"{label}: index.json is not an image index")
        want = Platform.host()
        for desc in index.manifests:
            if desc.platform is not None and not want.matches(desc.platform):
                continue
            tags = oci_tags(desc.annotations, label)
            manifest_digest = self._stage_oci_manifest(archive, staged, label, desc, 1,
                                                       SizeBudget(label))
            staged.add_image(manifest_digest, tags)
        if not staged.images:
            raise InvalidImage(f"{label}: no image for {want}")

    def _stage_oci_manifest(self, archive: Archive, staged: Staged, label: str,
                            desc: Descriptor, depth: int, budget: SizeBudget) -> str:
        """Verify and stage the manifest desc points at (choosing a platform from indexes).

        depth counts the indexes above desc (index.json is the first), as a pull counts them.
        """
        data = _read_blob(archive, desc, label)
        what = f"{label}: {desc.digest[:19]}"
        doc = documents.parse(data, desc.media_type, what)
        if isinstance(doc, Index):
            documents.check_depth(depth + 1, label)
            chosen = documents.select(doc, Platform.host(), what)
            return self._stage_oci_manifest(archive, staged, label, chosen, depth + 1, budget)
        config_bytes = _read_blob(archive, doc.config, label)
        config = parse_config(config_bytes, f"{label}: config {doc.config.digest[:19]}",
                              len(doc.layers))
        diff_ids = config["rootfs"]["diff_ids"]
        for layer, diff_id in zip(doc.layers, diff_ids, strict=True):
            if layer.digest in staged.diff_ids:
                if staged.diff_ids[layer.digest] != diff_id:
                    raise mismatch(label, layer.digest, diff_id, staged.diff_ids[layer.digest])
                budget.charge(staged.uncompressed[layer.digest])
                continue
            found = archive.size(_blob_name(layer.digest))
            if found != layer.size:  # checked before a byte of it is copied
                raise mismatch(label, f"layer {layer.digest}", f"{layer.size} bytes",
                               f"{found} bytes")
            self._stage_layer(archive, _blob_name(layer.digest), staged, label,
                              diff_id, layer.digest, budget)
            if staged.blobs[layer.digest].stat().st_size != layer.size:
                raise InvalidImage(f"{label}: layer {layer.digest} has the wrong size")
        staged.blobs[doc.config.digest] = _stage_bytes(config_bytes, staged.directory)
        staged.blobs[desc.digest] = _stage_bytes(data, staged.directory)
        return desc.digest

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Staged]:
        with self.store.tempdir("load-") as tmp:
            yield Staged(Path(tmp))

    def _commit(self, staged: Staged) -> builtins.list[Loaded]:
        return self.images.commit(staged)


# ---- helpers -------------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _digest_in_name(name: str) -> str | None:
    """The digest a docker-save member name states: `<hex>.json` or `blobs/sha256/<hex>`."""
    if not (name.endswith(".json") or "blobs/sha256/" in name):
        return None
    hexpart = name.rpartition("/")[2].removesuffix(".json")
    return "sha256:" + hexpart if is_hex64(hexpart) else None


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _read_small(archive: Archive, name: str, label: str) -> bytes:
    try:
        with archive.open(name) as fh:
            data = fh.read(MAX_JSON_BYTES + 1)
    except (OSError, *READ_ERRORS) as exc:
        raise InvalidImage(f"{label}: cannot read {name[:120]}: {first_line(exc)}") from None
    if len(data) > MAX_JSON_BYTES:
        raise InvalidImage(f"{label}: {name[:120]} is implausibly large")
    return data


def _read_blob(archive: Archive, desc: Descriptor, label: str) -> bytes:
    """A small blob (manifest, index, config), verified against its descriptor."""
    name = _blob_name(desc.digest)
    data = _read_small(archive, name, label)
    found = sha256(data)
    if found != desc.digest:
        raise mismatch(label, name, desc.digest, found)
    if len(data) != desc.size:
        raise InvalidImage(f"{label}: {name} is {len(data)} bytes, descriptor says {desc.size}")
    return data


def _media_type(staged: Staged, digest: str) -> str:
    with open(staged.blobs[digest], "rb") as fh:
        gzipped = fh.read(2) == compression.GZIP_MAGIC
    return compression.MEDIA_OCI_LAYER_GZIP if gzipped else MEDIA_OCI_LAYER


def _stage_bytes(data: bytes, directory: Path) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(dir=directory)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        if is_no_space(exc):
            raise no_space(directory.parent.parent) from None  # the store, above tmp/load-*
        raise
    return Path(tmp)


def _stage_blob(src: IO[bytes], directory: Path, label: str, name: str,
                where: Path) -> tuple[Path, str, int]:
    """Copy src into directory, hashing it on the way; (path, digest, size)."""
    fd, tmp = tempfile.mkstemp(dir=directory)

    def read() -> bytes:
        try:
            return src.read(CHUNK)
        except READ_ERRORS as exc:
            raise InvalidImage(f"{label}: cannot read {name[:120]}: {first_line(exc)}") from None

    with os.fdopen(fd, "wb") as out:
        digest, size = copy_hashed(read, out, where)
    return Path(tmp), digest, size
