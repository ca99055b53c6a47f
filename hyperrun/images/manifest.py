"""The documents that describe an image: descriptors, manifests, indexes and platforms.

The one model and the one set of checks for both ways images arrive: `pull` reads these
documents from a registry, `load` from an OCI layout (whose index.json is an index too).
Docker schema 2 manifests and OCI manifests describe one image; Docker manifest lists and
OCI indexes point at one manifest per platform. Schema 1 (signed, v1 configs) is refused.
A document must be what its media type says: an index that carries layers, or a manifest
that carries manifests, is rejected rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hyperrun.digest import is_digest
from hyperrun.errors import InvalidImage, UsageError
from hyperrun.images.model import (
    CONFIG_MEDIA_TYPES,
    INDEX_MEDIA_TYPES,
    LAYER_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
)
from hyperrun.images.validate import MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, host_platform, parse_json

__all__ = ["MAX_CONFIG_BYTES", "MAX_INDEX_DEPTH", "MAX_LAYERS", "MAX_MANIFEST_BYTES",
           "Descriptor", "Index", "Manifest", "Platform", "check_depth", "check_layer_count",
           "descriptor", "parse", "select"]

MAX_LAYERS = 256  # per image, whichever way it arrives (docker's own limit is 127 + 1)
MAX_INDEX_DEPTH = 2  # indexes in a chain above a manifest, the top one included
SCHEMA1_TYPES = frozenset({
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
})
_ZSTD = "zstd"
_MALFORMED = "the image is malformed; nothing of it was stored"
# The variant an architecture has when a platform leaves it out (containerd's normalisation).
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
                 "armel": "arm", "i386": "386"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`linux/amd64`, `linux/arm64/v8`, `linux/arm/v7` (as `--platform` takes them)."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}",
                             hint="use OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8")
        arch = _ARCH_ALIASES.get(parts[1], parts[1])
        return cls(parts[0], arch, parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        os_name, arch = host_platform()
        return cls(os_name, arch)

    def matches(self, other: Platform) -> bool:
        """True if other (an index entry) can run where self is wanted."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.variant is None:
            return True
        default = _DEFAULT_VARIANT.get(self.architecture)
        return (other.variant or default) == (self.variant or default)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """One image: its config and its layers, in order."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    """A manifest list or OCI index: one manifest per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]


def parse(data: bytes, content_type: str | None, what: str) -> Manifest | Index:
    """Parse a manifest or index (content_type is the registry's Content-Type, if any)."""
    doc = parse_json(data, f"{what}: manifest", MAX_MANIFEST_BYTES)
    if not isinstance(doc, dict):
        raise InvalidImage(f"{what}: manifest is not a JSON object", hint=_MALFORMED)
    declared = doc.get("mediaType")
    media_type = declared if isinstance(declared, str) and declared else content_type or ""
    if media_type in SCHEMA1_TYPES or doc.get("schemaVersion") == 1:
        raise InvalidImage(f"{what}: Docker image manifest schema 1 is not supported",
                           hint="push the image again with a current docker or skopeo "
                                "(schema 2 or OCI)")
    if doc.get("schemaVersion") != 2:
        raise InvalidImage(f"{what}: unsupported manifest schemaVersion "
                           f"{str(doc.get('schemaVersion'))[:40]!r}")
    if content_type and declared and content_type in (INDEX_MEDIA_TYPES | MANIFEST_MEDIA_TYPES) \
            and content_type != declared:
        raise InvalidImage(f"{what}: served as {content_type[:120]} but declares "
                           f"{declared[:120]}",
                           hint=_MALFORMED)
    if not media_type:  # OCI lets mediaType be absent; then the shape decides
        if "manifests" in doc and "layers" not in doc and "config" not in doc:
            media_type = MEDIA_OCI_INDEX
        elif "config" in doc and "manifests" not in doc:
            media_type = MEDIA_OCI_MANIFEST
    if media_type in INDEX_MEDIA_TYPES:
        if "layers" in doc or "config" in doc:
            raise InvalidImage(f"{what}: an image index that carries layers or a config",
                               hint=_MALFORMED)
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InvalidImage(f"{what}: image index has no manifests list", hint=_MALFORMED)
        return Index(media_type, tuple(descriptor(d, what, platform=True) for d in entries))
    if media_type in MANIFEST_MEDIA_TYPES:
        if "manifests" in doc:
            raise InvalidImage(f"{what}: an image manifest that carries manifests", hint=_MALFORMED)
        config = descriptor(doc.get("config"), what)
        if config.media_type not in CONFIG_MEDIA_TYPES:
            raise InvalidImage(f"{what}: unsupported config type {config.media_type[:120]!r}",
                               hint="this is not a container image (an artifact?)")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise InvalidImage(f"{what}: manifest has no layers list", hint=_MALFORMED)
        check_layer_count(len(layers), what)
        descs = tuple(descriptor(d, what) for d in layers)
        for layer in descs:
            if layer.media_type not in LAYER_MEDIA_TYPES:
                zstd = _ZSTD in layer.media_type
                raise InvalidImage(
                    f"{what}: unsupported layer type {layer.media_type[:120]!r}",
                    hint="hyperrun unpacks plain and gzip tar layers only"
                         + (" (zstd is not supported)" if zstd else ""))
        return Manifest(media_type, config, descs)
    raise InvalidImage(f"{what}: unsupported manifest type {media_type[:120] or '(none)'!r}",
                       hint="hyperrun pulls Docker schema 2 and OCI images")


def select(index: Index, want: Platform, what: str) -> Descriptor:
    """The index entry for platform want; an explicit error if there is none."""
    candidates = [d for d in index.manifests
                  if d.platform is not None and want.matches(d.platform)
                  and d.media_type in (MANIFEST_MEDIA_TYPES | INDEX_MEDIA_TYPES)]
    if not candidates:
        have = sorted({str(d.platform)[:60] for d in index.manifests
                       if d.platform is not None and d.platform.os != "unknown"})[:20]
        raise InvalidImage(f"{what}: no image for {want} in the manifest list",
                           hint="available: " + (", ".join(have) or "none")
                                + "; choose one with --platform")
    # Without a wanted variant, prefer the architecture's default one, as containerd does.
    default = _DEFAULT_VARIANT.get(want.architecture)
    for desc in candidates:
        assert desc.platform is not None
        if (desc.platform.variant or default) == (want.variant or default):
            return desc
    return candidates[0]


def check_depth(depth: int, what: str) -> None:
    """Refuse a chain of more than MAX_INDEX_DEPTH indexes (depth counts the top one as 1)."""
    if depth > MAX_INDEX_DEPTH:
        raise InvalidImage(f"{what}: image indexes nested too deeply "
                           f"(more than {MAX_INDEX_DEPTH})", hint=_MALFORMED)


def check_layer_count(count: int, what: str) -> None:
    if count > MAX_LAYERS:
        raise InvalidImage(f"{what}: {count} layers; at most {MAX_LAYERS}", hint=_MALFORMED)


def descriptor(value: Any, what: str, platform: bool = False) -> Descriptor:
    """One descriptor, checked: a mediaType, a sha256 digest and an integer size."""
    if not isinstance(value, Mapping):
        raise InvalidImage(f"{what}: malformed descriptor {str(value)[:100]}", hint=_MALFORMED)
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) \
            or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidImage(f"{what}: malformed descriptor {str(dict(value))[:100]}",
                           hint=_MALFORMED)
    if not is_digest(digest):
        raise InvalidImage(f"{what}: unsupported digest {digest[:80]!r}",
                           hint="hyperrun verifies sha256 digests only")
    plat = None
    if platform:
        raw = value.get("platform")
        if isinstance(raw, Mapping) and isinstance(raw.get("os"), str) \
                and isinstance(raw.get("architecture"), str):
            variant = raw.get("variant")
            plat = Platform(raw["os"], raw["architecture"],
                            variant if isinstance(variant, str) and variant else None)
    urls = value.get("urls")
    annotations = value.get("annotations")
    return Descriptor(media_type, digest, size, plat,
                      tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list)
                      else (),
                      {k: v for k, v in annotations.items()
                       if isinstance(k, str) and isinstance(v, str)}
                      if isinstance(annotations, Mapping) else {})
