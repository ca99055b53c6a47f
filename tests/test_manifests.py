"""Manifest parsing, caps and platform selection (hyperrun/images/manifest.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hyperrun.errors import InvalidImage, UsageError
from hyperrun.images.manifest import (
    MAX_MANIFEST_BYTES,
    Index,
    Manifest,
    Platform,
    parse,
    select,
)

DIGEST = "sha256:" + "a" * 64
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def desc(media_type: str, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": DIGEST, "size": 10, **extra}


def manifest(media_type: str = OCI_MANIFEST, layer_type: str | None = None,
             **extra: Any) -> bytes:
    config = ("application/vnd.docker.container.image.v1+json" if media_type == DOCKER_MANIFEST
              else "application/vnd.oci.image.config.v1+json")
    layer = layer_type or ("application/vnd.docker.image.rootfs.diff.tar.gzip"
                           if media_type == DOCKER_MANIFEST
                           else "application/vnd.oci.image.layer.v1.tar+gzip")
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "config": desc(config),
                       "layers": [desc(layer), desc(layer)], **extra}).encode()


def index(*platforms: dict[str, str], media_type: str = OCI_INDEX, **extra: Any) -> bytes:
    entries = [desc(OCI_MANIFEST if media_type == OCI_INDEX else DOCKER_MANIFEST,
                    platform=p) for p in platforms]
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries,
                       **extra}).encode()


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_manifest(media_type: str) -> None:
    doc = parse(manifest(media_type), media_type, "x")
    assert isinstance(doc, Manifest)
    assert doc.media_type == media_type and len(doc.layers) == 2


def test_manifest_type_from_content_type_or_shape() -> None:
    body = json.loads(manifest())
    del body["mediaType"]
    assert isinstance(parse(json.dumps(body).encode(), None, "x"), Manifest)
    assert isinstance(parse(json.dumps(body).encode(), OCI_MANIFEST, "x"), Manifest)


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_LIST])
def test_index(media_type: str) -> None:
    doc = parse(index({"os": "linux", "architecture": "amd64"}, media_type=media_type),
                media_type, "x")
    assert isinstance(doc, Index) and doc.manifests[0].platform == Platform("linux", "amd64")


def test_schema1_is_unsupported() -> None:
    body = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    with pytest.raises(InvalidImage, match="schema 1 is not supported"):
        parse(body, "application/vnd.docker.distribution.manifest.v1+prettyjws", "x")


def test_index_with_layers_is_rejected() -> None:
    body = json.loads(index({"os": "linux", "architecture": "amd64"}))
    body["layers"] = []
    with pytest.raises(InvalidImage, match="index that carries layers"):
        parse(json.dumps(body).encode(), OCI_INDEX, "x")


def test_manifest_with_manifests_is_rejected() -> None:
    with pytest.raises(InvalidImage, match="manifest that carries manifests"):
        parse(manifest(manifests=[]), OCI_MANIFEST, "x")


def test_content_type_and_declared_type_must_agree() -> None:
    with pytest.raises(InvalidImage, match="served as"):
        parse(manifest(), OCI_INDEX, "x")


def test_size_cap() -> None:
    body = manifest()[:-1] + b" " * MAX_MANIFEST_BYTES + b"}"
    with pytest.raises(InvalidImage, match="too large"):
        parse(body, OCI_MANIFEST, "x")


def test_zstd_layers_are_refused_clearly() -> None:
    with pytest.raises(InvalidImage) as info:
        parse(manifest(layer_type="application/vnd.oci.image.layer.v1.tar+zstd"), None, "x")
    assert "zstd" in (info.value.hint or "")


@pytest.mark.parametrize("body", [
    b"[]", b"not json", json.dumps({"schemaVersion": 2, "mediaType": "text/plain"}).encode(),
    json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"digest": "md5:x"},
                "layers": []}).encode(),
])
def test_malformed(body: bytes) -> None:
    with pytest.raises(InvalidImage):
        parse(body, None, "x")


def test_artifact_config_is_not_an_image() -> None:
    body = json.loads(manifest())
    body["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    with pytest.raises(InvalidImage, match="config type"):
        parse(json.dumps(body).encode(), None, "x")


PLATFORMS = index(
    {"os": "linux", "architecture": "amd64"},
    {"os": "linux", "architecture": "arm", "variant": "v6"},
    {"os": "linux", "architecture": "arm", "variant": "v7"},
    {"os": "linux", "architecture": "arm64", "variant": "v8"},
    {"os": "unknown", "architecture": "unknown"},
)


@pytest.mark.parametrize(("want", "found"), [
    ("linux/amd64", Platform("linux", "amd64")),
    ("linux/arm64", Platform("linux", "arm64", "v8")),
    ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
    ("linux/aarch64", Platform("linux", "arm64", "v8")),
    ("linux/arm", Platform("linux", "arm", "v7")),
    ("linux/arm/v6", Platform("linux", "arm", "v6")),
])
def test_select(want: str, found: Platform) -> None:
    doc = parse(PLATFORMS, None, "x")
    assert isinstance(doc, Index)
    assert select(doc, Platform.parse(want), "x").platform == found


@pytest.mark.parametrize("want", ["linux/s390x", "windows/amd64", "linux/arm/v5"])
def test_select_no_match_is_explicit(want: str) -> None:
    doc = parse(PLATFORMS, None, "x")
    assert isinstance(doc, Index)
    with pytest.raises(InvalidImage, match=f"no image for {want}") as info:
        select(doc, Platform.parse(want), "x")
    assert "linux/amd64" in (info.value.hint or "") and "unknown" not in (info.value.hint or "")


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d"])
def test_bad_platform(text: str) -> None:
    with pytest.raises(UsageError):
        Platform.parse(text)
