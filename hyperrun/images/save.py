"""Writing images out as a `docker save` archive (the layout docker 25 and later write).

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...) that also
carries docker's manifest.json (Config, RepoTags, Layers naming files under blobs/) and
`repositories`, so both `docker load` and OCI tools (skopeo, `hyperrun load`) read it.
Blobs go out exactly as the store holds them: configs byte for byte (the image id is the
config's digest), layers compressed or not as their manifest's media types say.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hyperrun import reference as references
from hyperrun.digest import Hasher
from hyperrun.errors import HyperrunError, ImageNotFound, InvalidImage, UsageError
from hyperrun.images.model import MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, Image
from hyperrun.images.store import ImageStore, dump_json
from hyperrun.reference import Reference
from hyperrun.store import owned_prefix, sweep_owned

CHUNK = 1 << 20
_TEMP_PREFIX = ".hyperrun-save-"


@dataclass(frozen=True)
class SaveItem:
    """One image to write, with the tags the archive gives it (none when named by id)."""

    image: Image
    tags: tuple[Reference, ...]


def resolve(images: ImageStore, names: Sequence[str]) -> list[SaveItem]:
    """The images names select, in the order first named, as docker save picks them.

    NAME:TAG saves that tag; a bare NAME every tag of that repository (or NAME:latest if
    it has none); an id or a digest reference saves the image untagged.
    """
    order: list[str] = []
    found: dict[str, tuple[Image, list[Reference]]] = {}

    def add(image: Image, tags: Sequence[Reference]) -> None:
        if image.id not in found:
            order.append(image.id)
            found[image.id] = (image, [])
        for tag in tags:
            if tag not in found[image.id][1]:
                found[image.id][1].append(tag)

    everything = images.list()
    for name in names:
        bare = _bare_repository(name)
        if bare is not None:
            tagged = [(image, [r for r in image.references if r.tag and r.name == bare.name])
                      for image in everything]
            tagged = [(image, refs) for image, refs in tagged if refs]
            if tagged:
                for image, refs in tagged:
                    add(image, refs)
                continue
        image = images.get(name)
        ref = _parse(name)
        named = ref is not None and ref.digest is None and ref in image.references
        add(image, [ref] if named and ref is not None else [])
    return [SaveItem(found[i][0], tuple(found[i][1])) for i in order]


def save_to_file(images: ImageStore, items: Sequence[SaveItem], path: Path) -> None:
    """Write the archive to path atomically: a temporary beside it, renamed when complete.

    Whatever happens (an error, Ctrl-C), path is either untouched or the whole archive.
    """
    path = Path(path)
    directory = path.parent
    if path.is_dir():
        raise UsageError(f"{path} is a directory", hint="give -o the name of a file to write")
    if path.exists() and not path.is_file():
        # /dev/null, a fifo: written in place; renaming over them would replace the node.
        with open(path, "wb") as out:
            write_archive(images, items, out)
        return
    if not directory.is_dir():
        raise UsageError(f"cannot write {path}: {directory} is not a directory",
                         hint="create the directory first")
    # Temporaries of a save that was killed outright are named for their dead owner.
    sweep_owned(directory, _TEMP_PREFIX)
    try:
        # 0600 as mkstemp makes it, as docker leaves its own archives: layers may hold secrets.
        fd, tmp = tempfile.mkstemp(prefix=owned_prefix(_TEMP_PREFIX), dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            write_archive(images, items, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a full disk, an I/O error: one line, not a traceback
            raise HyperrunError(f"cannot write {path}: {exc.strerror or exc}",
                                hint="free some space or write elsewhere with -o") from None
        raise


def write_archive(images: ImageStore, items: Sequence[SaveItem], out: IO[bytes]) -> None:
    """Stream the archive of items into out (a file or a pipe; nothing is seeked)."""
    with _open_blobs(images, items) as blobs, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        documents = _documents(items, blobs)
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for digest, fh in blobs.items():
            info = _member("blobs/sha256/" + digest.removeprefix("sha256:"),
                           os.fstat(fh.fileno()).st_size)
            reader = _Verifying(fh, digest)
            tar.addfile(info, reader)  # type: ignore[arg-type]
            reader.check()
        for name, data in documents:
            tar.addfile(_member(name, len(data)), io.BytesIO(data))


# ---- helpers -------------------------------------------------------------------------------


@contextlib.contextmanager
def _open_blobs(images: ImageStore, items: Sequence[SaveItem]) -> Iterator[dict[str, IO[bytes]]]:
    """Every blob the archive needs, opened while the store is locked.

    An open file outlives an `rmi` that unlinks it meanwhile, so the archive is whole
    without holding the lock for as long as it takes to write.
    """
    opened: dict[str, IO[bytes]] = {}
    try:
        with images.store.lock():
            for item in items:
                for digest in (item.image.manifest_digest, item.image.id,
                               *(layer.digest for layer in item.image.layers)):
                    if digest in opened:
                        continue
                    try:
                        opened[digest] = open(images.store.blob(digest), "rb")  # noqa: SIM115
                    except FileNotFoundError:
                        if item.image.id not in {i.id for i in images.list()}:
                            raise ImageNotFound(item.image.id) from None
                        raise InvalidImage(
                            f"blob {digest} of image {item.image.short_id} is missing",
                            hint="remove the image with `hyperrun rmi` and load it again",
                        ) from None
        yield opened
    finally:
        for fh in opened.values():
            fh.close()


def _documents(items: Sequence[SaveItem],
               blobs: dict[str, IO[bytes]]) -> list[tuple[str, bytes]]:
    """index.json, manifest.json, oci-layout and repositories for items."""
    manifests: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for item in items:
        image = item.image
        fd = blobs[image.manifest_digest].fileno()
        manifest = os.pread(fd, os.fstat(fd).st_size, 0)  # leaves the stream's offset alone
        descriptor = {"mediaType": _media_type(manifest), "digest": image.manifest_digest,
                      "size": len(manifest)}
        for tag in item.tags:
            manifests.append({**descriptor, "annotations": {
                "io.containerd.image.name": str(tag),
                "org.opencontainers.image.ref.name": tag.tag or "latest"}})
            if image.layers:
                repositories.setdefault(tag.familiar_name, {})[tag.tag or "latest"] = \
                    image.layers[-1].digest.removeprefix("sha256:")
        if not item.tags:
            manifests.append(descriptor)
        entries.append({
            "Config": "blobs/sha256/" + image.id.removeprefix("sha256:"),
            "RepoTags": [tag.familiar for tag in item.tags] or None,
            "Layers": ["blobs/sha256/" + layer.digest.removeprefix("sha256:")
                       for layer in image.layers],
        })
    index = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": manifests}
    docs = [("index.json", dump_json(index)), ("manifest.json", json.dumps(entries).encode()),
            ("oci-layout", dump_json({"imageLayoutVersion": "1.0.0"}))]
    if repositories:
        docs.append(("repositories", dump_json(repositories)))
    return docs


def _media_type(manifest: bytes) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        declared = json.loads(manifest).get("mediaType")
        if isinstance(declared, str) and declared:
            return declared
    return MEDIA_OCI_MANIFEST


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    return info


def _parse(name: str) -> Reference | None:
    try:
        return references.parse(name)
    except UsageError:
        return None


def _bare_repository(name: str) -> Reference | None:
    """name as a repository without tag or digest (`busybox`), else None."""
    try:
        ref = references.parse(name, default_tag=False)
    except UsageError:
        return None
    return ref if ref.tag is None and ref.digest is None else None


class _Verifying:
    """Reads a blob for the archive and checks, once it is read, that it is still intact."""

    def __init__(self, fh: IO[bytes], digest: str) -> None:
        self.fh, self.digest, self.hasher = fh, digest, Hasher()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size if size >= 0 else CHUNK)
        self.hasher.update(data)
        return data

    def check(self) -> None:
        if self.hasher.digest() != self.digest:
            raise InvalidImage(f"blob {self.digest} is damaged in the store",
                               hint="remove its image with `hyperrun rmi` and load it again")
