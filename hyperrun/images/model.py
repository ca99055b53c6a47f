"""What an image is once it sits in the store: its layers and the config a container starts from."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hyperrun.errors import InvalidImage
from hyperrun.reference import Reference
from hyperrun.spec import Protocol

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

INDEX_MEDIA_TYPES = frozenset({MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST})
MANIFEST_MEDIA_TYPES = frozenset({MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST})
CONFIG_MEDIA_TYPES = frozenset({MEDIA_OCI_CONFIG, MEDIA_DOCKER_CONFIG})
# Layers hyperrun can unpack; zstd is left out because Python's tarfile cannot read it.
LAYER_MEDIA_TYPES = frozenset({
    MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
})


# ExposedPorts: `PORT/PROTO` keys (docker reads a bare PORT as tcp) and empty-object values.
MAX_EXPOSED_PORTS = 1024  # -P publishes each on a host port of its own
_EXPOSED_RE = re.compile(r"([0-9]{1,5})(?:/(tcp|udp|sctp))?", re.ASCII)


@dataclass(frozen=True, order=True)
class ExposedPort:
    """A port the image says it listens on (EXPOSE); `-P` publishes it."""

    port: int
    protocol: str = Protocol.TCP  # tcp, udp or sctp (which the user network cannot carry)

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


@dataclass(frozen=True)
class ImageConfig:
    """The runtime defaults of an image, exactly as its config says.

    None means the config left the field out (or null); an empty tuple or string means it
    was set to empty. docker treats the two differently (e.g. an empty Entrypoint set by a
    later image resets the inherited Cmd), so both are preserved.
    """

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] | None = None
    working_dir: str | None = None
    user: str | None = None
    stop_signal: str | None = None
    exposed_ports: tuple[ExposedPort, ...] | None = None

    @classmethod
    def from_json(cls, config: Mapping[str, Any] | None) -> ImageConfig:
        """Build from the `config` object of an OCI/docker image config (may be null)."""
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise InvalidImage("image config: 'config' is not an object")
        return cls(
            entrypoint=_strings(config, "Entrypoint"),
            cmd=_strings(config, "Cmd"),
            env=_strings(config, "Env"),
            working_dir=_string(config, "WorkingDir"),
            user=_string(config, "User"),
            stop_signal=_string(config, "StopSignal"),
            exposed_ports=_exposed_ports(config),
        )


@dataclass(frozen=True)
class Layer:
    """One layer blob as the manifest names it; diff_id is the digest of the uncompressed tar."""

    digest: str
    media_type: str
    size: int
    diff_id: str


@dataclass(frozen=True)
class Image:
    """An image in the store. `id` is the config digest, as docker's IMAGE ID."""

    id: str
    manifest_digest: str
    references: tuple[Reference, ...]
    layers: tuple[Layer, ...]
    config: ImageConfig
    created: str | None
    size: int
    architecture: str
    os: str

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


def _strings(config: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        # Old (pre-1.0) docker configs stored a bare string; docker reads it as one argument.
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidImage(f"image config: {key} must be a list of strings")
    return tuple(value)


def _string(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidImage(f"image config: {key} must be a string")
    return value


def _exposed_ports(config: Mapping[str, Any]) -> tuple[ExposedPort, ...] | None:
    value = config.get("ExposedPorts")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidImage("image config: ExposedPorts must be an object")
    if len(value) > MAX_EXPOSED_PORTS:
        raise InvalidImage(f"image config: {len(value)} ExposedPorts, at most "
                           f"{MAX_EXPOSED_PORTS}")
    ports = set()
    for key, empty in value.items():
        found = _EXPOSED_RE.fullmatch(key) if isinstance(key, str) else None
        if found is None or not 1 <= int(found[1]) <= 65535:
            raise InvalidImage(f"image config: ExposedPorts has {str(key)[:40]!r}; want "
                               "PORT/tcp or PORT/udp, PORT from 1 to 65535")
        if empty is not None and not isinstance(empty, Mapping):
            raise InvalidImage(f"image config: ExposedPorts {key!r} must map to {{}}")
        ports.add(ExposedPort(int(found[1]), found[2] or Protocol.TCP))
    return tuple(sorted(ports))
