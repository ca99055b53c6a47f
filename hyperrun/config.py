"""hyperrun's own configuration: ~/.config/hyperrun/config.yaml (or $HYPERRUN_CONFIG).

    run:                      # defaults for `hyperrun run`; its flags override them
      cpus: 2
      memory: 1g
      accel: auto             # kvm, tcg or auto (kvm when the host can, else tcg)
    registries:
      docker.io:
        mirrors: [https://mirror.example.com]   # tried in order for pulls, then docker.io
      registry.example.com:5000:
        insecure: true        # may fall back to plain HTTP (loopback always may)
        ca: /etc/hyperrun/example-ca.pem        # trust this CA for its TLS certificate
        token_realms: [auth.example.com]        # may receive its credentials for tokens
    pull:
      retry_after_max: 30     # seconds; a registry asking to wait longer is an error
      stall_timeout: 60       # seconds a download may go without enough progress
      min_speed: 1k           # bytes per second over stall_timeout, at least
    images:
      max_size: 32g           # largest uncompressed image load, import or pull accepts

A missing file is an empty configuration; a malformed one is an error, never ignored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperrun.errors import UsageError

_HINT = "see the configuration section of the README"


def config_dir() -> Path:
    """~/.config/hyperrun, honouring $XDG_CONFIG_HOME."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hyperrun"


def config_path() -> Path:
    return Path(os.environ.get("HYPERRUN_CONFIG") or config_dir() / "config.yaml")


@dataclass(frozen=True)
class RegistryConfig:
    """How to reach one registry host (`host[:port]`)."""

    mirrors: tuple[str, ...] = ()
    insecure: bool = False
    ca: Path | None = None
    token_realms: tuple[str, ...] = ()  # other hosts that may get its credentials


@dataclass(frozen=True)
class PullConfig:
    """Limits that keep a misbehaving registry from holding a pull for ever."""

    retry_after_max: float = 30.0  # seconds
    stall_timeout: float = 60.0  # seconds
    min_speed: int = 1024  # bytes per second, measured over stall_timeout


@dataclass(frozen=True)
class Config:
    cpus: str | None = None
    memory: str | None = None
    accel: str | None = None
    registries: Mapping[str, RegistryConfig] = field(default_factory=dict)
    pull: PullConfig = PullConfig()
    max_image_size: int | None = None  # bytes; None: images/limits.py's default

    def registry(self, host: str) -> RegistryConfig:
        """The settings for host; loopback hosts are insecure-allowed, as docker has them."""
        conf = self.registries.get(host, RegistryConfig())
        if not conf.insecure and is_loopback(host):
            conf = dataclasses.replace(conf, insecure=True)
        return conf


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (with or without a port), and localhost."""
    name = host
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load(path: Path | None = None) -> Config:
    """Read the configuration file; defaults if there is none."""
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", hint=_HINT) from None
    # Imported here: a store without a configuration file (the common case) starts every
    # command ~12 ms sooner without the YAML parser.
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}", hint=_HINT) from None
    return parse(doc, str(path))


def parse(doc: Any, where: str = "config") -> Config:
    """Build a Config from the parsed YAML document, rejecting unknown keys and bad types."""
    if doc is None:
        return Config()
    top = _mapping(doc, where, {"run", "registries", "pull", "images"})
    run = _mapping(top.get("run") or {}, f"{where}: run", {"cpus", "memory", "accel"})
    accel = _scalar(run.get("accel"), f"{where}: run.accel")
    if accel is not None and accel not in ("auto", "kvm", "tcg"):
        raise UsageError(f"{where}: run.accel must be auto, kvm or tcg", hint=_HINT)
    registries = {}
    for host, value in _mapping(top.get("registries") or {}, f"{where}: registries").items():
        label = f"{where}: registries.{host}"
        entry = _mapping(value or {}, label, {"mirrors", "insecure", "ca", "token_realms"})
        mirrors = entry.get("mirrors") or []
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise UsageError(f"{label}.mirrors must be a list of URLs", hint=_HINT)
        insecure = entry.get("insecure", False)
        if not isinstance(insecure, bool):
            raise UsageError(f"{label}.insecure must be true or false", hint=_HINT)
        ca = entry.get("ca")
        if ca is not None and not isinstance(ca, str):
            raise UsageError(f"{label}.ca must be a file name", hint=_HINT)
        realms = entry.get("token_realms") or []
        if not isinstance(realms, list) or not all(
                isinstance(r, str) and _HOST_RE.fullmatch(r) for r in realms):
            raise UsageError(f"{label}.token_realms must be a list of host names",
                             hint="e.g. [auth.example.com]")
        registries[str(host)] = RegistryConfig(
            tuple(m.rstrip("/") for m in mirrors), insecure,
            Path(ca).expanduser() if ca else None, tuple(r.lower() for r in realms))
    images = _mapping(top.get("images") or {}, f"{where}: images", {"max_size"})
    max_size = images.get("max_size")
    return Config(
        cpus=_scalar(run.get("cpus"), f"{where}: run.cpus"),
        memory=_scalar(run.get("memory"), f"{where}: run.memory"),
        accel=accel,
        registries=registries,
        pull=_pull(top.get("pull") or {}, f"{where}: pull"),
        max_image_size=None if max_size is None
        else parse_size(max_size, f"{where}: images.max_size"),
    )


_HOST_RE = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")


def _pull(value: Any, label: str) -> PullConfig:
    entry = _mapping(value, label, {"retry_after_max", "stall_timeout", "min_speed"})
    default = PullConfig()
    retry_after_max = _seconds(entry.get("retry_after_max", default.retry_after_max),
                               f"{label}.retry_after_max", allow_zero=True)
    stall_timeout = _seconds(entry.get("stall_timeout", default.stall_timeout),
                             f"{label}.stall_timeout", allow_zero=False)
    min_speed = parse_size(entry.get("min_speed", default.min_speed), f"{label}.min_speed",
                           "bytes per second, e.g. 1024 or 100k")
    return PullConfig(retry_after_max, stall_timeout, min_speed)


def _seconds(value: Any, label: str, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            0 <= value <= 86400) or (value == 0 and not allow_zero):
        least = "0" if allow_zero else "more than 0"
        raise UsageError(f"{label} must be a number of seconds, {least} to 86400", hint=_HINT)
    return float(value)


def _mapping(value: Any, label: str, keys: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{label} must be a mapping", hint=_HINT)
    if keys is not None:
        unknown = sorted(str(k) for k in value if k not in keys)
        if unknown:
            raise UsageError(f"{label}: unknown setting {unknown[0]!r}",
                             hint=f"known: {', '.join(sorted(keys))}")
    return value


def _scalar(value: Any, label: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UsageError(f"{label} must be a number or a size", hint=_HINT)
    return str(value)


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"([0-9]{1,15})([kmgt]?)(?:i?b)?")


def parse_size(value: Any, label: str, what: str = "a size such as 32g or 512m") -> int:
    """A positive byte count: a whole number, or one with a k/m/g/t suffix (`32g`, `1k`)."""
    text = str(value).strip().lower() \
        if not isinstance(value, bool) and isinstance(value, str | int) else ""
    match = _SIZE_RE.fullmatch(text)  # ASCII digits only: `²` is a digit to str.isdigit
    if match is None or int(match.group(1)) <= 0:
        raise UsageError(f"{label} must be {what}, not {str(value)[:40]!r}", hint=_HINT)
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]
