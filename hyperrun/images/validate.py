"""The one JSON parser for image documents, and the checks of image configs.

Every document comes from outside (an archive or a registry), so each is parsed here,
bounded in size and nesting, and checked for shape and types before anything reads a
field of it. Descriptors, manifests and indexes are modelled in images/manifest.py.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from typing import Any

from hyperrun import reference as references
from hyperrun.digest import is_digest
from hyperrun.errors import InvalidImage, UsageError
from hyperrun.images.model import ImageConfig
from hyperrun.reference import Reference

MAX_MANIFEST_BYTES = 4 << 20  # the distribution spec's own limit for manifests
MAX_CONFIG_BYTES = 8 << 20
MAX_JSON_BYTES = MAX_CONFIG_BYTES  # any other document (manifest.json, index.json)
_MALFORMED = "the image is malformed; nothing of it was stored"
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


def host_platform() -> tuple[str, str]:
    """(os, architecture) in OCI terms for this host, e.g. ("linux", "amd64")."""
    machine = platform.machine()
    return "linux", _GOARCH.get(machine, machine)


def mismatch(label: str, name: str, expected: str, found: str) -> InvalidImage:
    return InvalidImage(
        f"{label}: {name[:120]} fails verification: expected {expected[:80]}, got {found}",
        hint="the archive is corrupt or was tampered with; nothing was loaded",
    )


def oci_tags(annotations: Mapping[str, str], label: str) -> tuple[Reference, ...]:
    """The image name an OCI layout's index.json gives a manifest in its annotations."""
    name = annotations.get("io.containerd.image.name") or annotations.get(
        "org.opencontainers.image.ref.name")
    # A bare ref.name ("latest", "1.0") is a tag with no repository: the image stays untagged.
    if not isinstance(name, str) or not any(c in name for c in ":/@"):
        return ()
    try:
        return (references.parse_tag(name),)
    except UsageError as exc:
        raise InvalidImage(f"{label}: bad image name annotation: {exc.message[:200]}") from None


def parse_config(data: bytes, what: str, layers: int | None = None) -> dict[str, Any]:
    """An image config, checked; layers is the count its manifest lists, if known."""
    config = parse_json(data, what, MAX_CONFIG_BYTES)
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" \
            or not isinstance(rootfs.get("diff_ids"), list) \
            or not all(is_digest(d) for d in rootfs["diff_ids"]):
        raise InvalidImage(f"{what}: not an image config (rootfs.diff_ids missing or invalid)",
                           hint=_MALFORMED)
    diff_ids = rootfs["diff_ids"]
    if layers is not None and len(diff_ids) != layers:
        raise InvalidImage(f"{what} lists {len(diff_ids)} layers, the manifest {layers}",
                           hint=_MALFORMED)
    ImageConfig.from_json(config.get("config"))  # validates types now, not at run time
    os_name = config.get("os", "linux")
    if os_name != "linux":
        raise InvalidImage(f"{what}: an image for {str(os_name)[:40]!r}",
                           hint="hyperrun runs linux images")
    return config


def parse_json(data: bytes, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """The one JSON parser for documents from outside: bounded in size and in nesting."""
    if len(data) > limit:
        raise InvalidImage(f"{what}: a document of {len(data)} bytes is too large "
                           f"(at most {limit})", hint=_MALFORMED)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InvalidImage(f"{what}: invalid JSON: {str(exc)[:120]}", hint=_MALFORMED) from None
    except RecursionError:
        raise InvalidImage(f"{what}: JSON nested too deeply", hint=_MALFORMED) from None

