"""Checks for the JSON documents of an image (descriptors, indexes, configs).

Every document comes from outside (an archive or a registry), so each is checked for
shape and types here before anything reads a field of it.
"""

from __future__ import annotations

import json
import platform
from typing import Any

from hyperrun import reference as references
from hyperrun.digest import is_digest
from hyperrun.errors import InvalidImage, UsageError
from hyperrun.images.model import ImageConfig
from hyperrun.reference import Reference

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


def host_platform() -> tuple[str, str]:
    """(os, architecture) in OCI terms for this host, e.g. ("linux", "amd64")."""
    machine = platform.machine()
    return "linux", _GOARCH.get(machine, machine)


def mismatch(label: str, name: str, expected: str, found: str) -> InvalidImage:
    return InvalidImage(
        f"{label}: {name} fails verification: expected {expected}, got {found}",
        hint="the archive is corrupt or was tampered with; nothing was loaded",
    )


def check_descriptor(desc: Any, label: str) -> dict[str, Any]:
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str) \
            or not isinstance(desc.get("size"), int) or desc["size"] < 0:
        raise InvalidImage(f"{label}: malformed descriptor {str(desc)[:120]}")
    if not is_digest(desc["digest"]):
        raise InvalidImage(f"{label}: unsupported digest {desc['digest'][:80]!r}",
                           hint="hyperrun verifies sha256 digests only")
    return desc


def oci_tags(desc: dict[str, Any], label: str) -> tuple[Reference, ...]:
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


def pick_platform(index: dict[str, Any], label: str) -> dict[str, Any]:
    want = host_platform()
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise InvalidImage(f"{label}: image index has no manifests list")
    for desc in manifests:
        check_descriptor(desc, label)
        plat = desc.get("platform")
        if isinstance(plat, dict) and (plat.get("os"), plat.get("architecture")) == want:
            return desc
    raise InvalidImage(f"{label}: no manifest for {want[0]}/{want[1]} in the image index")


def parse_config(data: bytes, what: str) -> dict[str, Any]:
    config = parse_json(data, what)
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" \
            or not isinstance(rootfs.get("diff_ids"), list) \
            or not all(is_digest(d) for d in rootfs["diff_ids"]):
        raise InvalidImage(f"{what}: not an image config (rootfs.diff_ids missing or invalid)")
    ImageConfig.from_json(config.get("config"))  # validates types now, not at run time
    if config.get("os", "linux") != "linux":
        raise InvalidImage(f"{what}: an image for {config['os']!r}; hyperrun runs linux images")
    return config


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InvalidImage(f"{what}: invalid JSON: {exc}") from None

