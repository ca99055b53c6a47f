"""Build tar layers, docker-save archives and OCI layouts in memory for the image tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MTIME = 1_600_000_000


@dataclass(frozen=True)
class Entry:
    """One tar entry: a TarInfo's fields plus the data of a regular file."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    devmajor: int = 0
    devminor: int = 0


def file(name: str, data: bytes | str = b"", mode: int = 0o644, **kw: Any) -> Entry:
    return Entry(name, tarfile.REGTYPE, data.encode() if isinstance(data, str) else data,
                 mode=mode, **kw)


def directory(name: str, mode: int = 0o755, **kw: Any) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode, **kw)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def device(name: str, major: int, minor: int, kind: bytes = tarfile.CHRTYPE) -> Entry:
    return Entry(name, kind, mode=0o666, devmajor=major, devminor=minor)


def fifo(name: str) -> Entry:
    return Entry(name, tarfile.FIFOTYPE, mode=0o600)


def tar_bytes(*entries: Entry, compress: bool = False) -> bytes:
    """A tar archive of entries, exactly as given (names are not sanitised)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type, ti.linkname, ti.mode = e.type, e.linkname, e.mode
            ti.uid, ti.gid, ti.mtime = e.uid, e.gid, e.mtime
            ti.devmajor, ti.devminor = e.devmajor, e.devminor
            ti.size = len(e.data) if e.type == tarfile.REGTYPE else 0
            tar.addfile(ti, io.BytesIO(e.data) if ti.size else None)
    data = buf.getvalue()
    return gzip.compress(data, mtime=0) if compress else data


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hexof(digest: str) -> str:
    return digest.removeprefix("sha256:")


def dump(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


@dataclass
class ImageSpec:
    """An image made of layers (uncompressed tars) and runtime config, ready to package."""

    layers: list[bytes]
    config: dict[str, Any] = field(default_factory=lambda: {"Cmd": ["sh"]})
    architecture: str = "amd64"
    created: str = "2020-09-13T12:26:40Z"
    compress: bool = True

    def config_bytes(self) -> bytes:
        return dump({
            "architecture": self.architecture,
            "os": "linux",
            "created": self.created,
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in self.layers]},
        })

    def blobs(self) -> list[bytes]:
        return [gzip.compress(layer, mtime=0) if self.compress else layer
                for layer in self.layers]

    def manifest_bytes(self) -> bytes:
        config = self.config_bytes()
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if self.compress else "")
        return dump({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": media, "digest": sha256(b), "size": len(b)}
                       for b in self.blobs()],
        })

    @property
    def id(self) -> str:
        return sha256(self.config_bytes())


def descriptor(data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def oci_layout_files(images: list[tuple[ImageSpec, str | None]],
                     nested: dict[str, ImageSpec] | None = None) -> dict[str, bytes]:
    """Files of an OCI layout holding images with ref names; `nested` adds one image index
    of {architecture: image} named `nested:latest`."""
    files: dict[str, bytes] = {"oci-layout": dump({"imageLayoutVersion": "1.0.0"})}
    manifests = []

    def add_image(image: ImageSpec) -> bytes:
        for blob in [image.config_bytes(), *image.blobs()]:
            files["blobs/sha256/" + hexof(sha256(blob))] = blob
        manifest = image.manifest_bytes()
        files["blobs/sha256/" + hexof(sha256(manifest))] = manifest
        return manifest

    for image, ref in images:
        manifest = add_image(image)
        annotations = {"org.opencontainers.image.ref.name": ref} if ref else {}
        manifests.append(descriptor(manifest, "application/vnd.oci.image.manifest.v1+json",
                                    annotations=annotations))
    if nested:
        inner = dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                      "manifests": [descriptor(add_image(img),
                                               "application/vnd.oci.image.manifest.v1+json",
                                               platform={"os": "linux", "architecture": arch})
                                    for arch, img in nested.items()]})
        files["blobs/sha256/" + hexof(sha256(inner))] = inner
        manifests.append(descriptor(inner, "application/vnd.oci.image.index.v1+json",
                                    annotations={"org.opencontainers.image.ref.name":
                                                 "nested:latest"}))
    files["index.json"] = dump({"schemaVersion": 2, "manifests": manifests})
    return files


def docker_save_files(images: list[tuple[ImageSpec, list[str]]],
                      modern: bool = False) -> dict[str, bytes | str]:
    """Files of a `docker save` archive; legacy layout (<id>/layer.tar, <hex>.json) unless
    modern (docker 25+: blobs/sha256/ plus manifest.json). A str value is a symlink target."""
    files: dict[str, bytes | str] = {}
    manifest = []
    for image, tags in images:
        config = image.config_bytes()
        if modern:
            config_name = "blobs/sha256/" + hexof(sha256(config))
        else:
            config_name = hexof(sha256(config)) + ".json"
        files[config_name] = config
        layer_names = []
        for layer in image.layers:  # docker save stores layers uncompressed
            if modern:
                name = "blobs/sha256/" + hexof(sha256(layer))
                files[name] = layer
            else:
                name = hexof(sha256(layer + b"id")) + "/layer.tar"
                if name not in files:
                    files[name] = layer
            layer_names.append(name)
        manifest.append({"Config": config_name, "RepoTags": tags or None, "Layers": layer_names})
    files["manifest.json"] = json.dumps(manifest).encode()
    return files


def write_dir(files: dict[str, bytes], root: Path) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_tar(files: dict[str, Any], path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.mtime = MTIME
            if isinstance(data, str):
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                tar.addfile(ti)
            else:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
    return path


def wait_until(predicate: Any, timeout: float = 30.0) -> bool:
    """Poll predicate every 0.1 s until it is true or timeout passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def until(what: Any, timeout: float = 60.0, step: float = 0.1) -> Any:
    """Call what() until it returns something true or timeout passes; its last result."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(step)
