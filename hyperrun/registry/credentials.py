"""Registry credentials: hyperrun's own auth file first, then docker's config.json `auths`.

`hyperrun login` writes only ~/.config/hyperrun/auth.json (mode 0600, docker's format);
docker's file is read, never written. Credential helpers (credsStore, credHelpers) are
not consulted: they run external programs that hyperrun does not vouch for.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperrun.config import config_dir
from hyperrun.errors import UsageError
from hyperrun.log import log
from hyperrun.reference import DEFAULT_DOMAIN
from hyperrun.store import atomic_write

# docker keeps Docker Hub's credentials under its v1 index URL.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never let a password reach a log line or a traceback
        return f"Credentials(username={self.username!r}, password=***)"


def auth_file() -> Path:
    return config_dir() / "auth.json"


def docker_config_file() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(base) / "config.json"


def registry_host(server: str) -> str:
    """`https://index.docker.io/v1/`, `http://host:5000/v2/`, `host:5000` -> a registry host."""
    host = server.strip()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.partition("/")[0].lower()
    return DEFAULT_DOMAIN if host in _HUB_ALIASES else host


def lookup(host: str) -> Credentials | None:
    """Credentials for registry host: `hyperrun login`'s, else docker's; None if neither."""
    host = registry_host(host)
    for path in (auth_file(), docker_config_file()):
        creds = _find(_read(path), host, path)
        if creds is not None:
            log.debug("credentials for %s from %s", host, path)
            return creds
    return None


def save(host: str, creds: Credentials) -> Path:
    """Remember creds for host in hyperrun's auth file (0600); returns the file."""
    host = registry_host(host)
    path = auth_file()
    doc = _read(path)
    auths = doc.setdefault("auths", {})
    for key in [k for k in auths if registry_host(k) == host]:
        del auths[key]
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    auths[DOCKER_HUB_KEY if host == DEFAULT_DOMAIN else host] = {"auth": token}
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)
    return path


def remove(host: str) -> bool:
    """Forget host in hyperrun's auth file; False if it had no credentials there."""
    host = registry_host(host)
    path = auth_file()
    doc = _read(path)
    auths = doc.get("auths", {})
    keys = [k for k in auths if registry_host(k) == host]
    if not keys:
        return False
    for key in keys:
        del auths[key]
    atomic_write(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)
    return True


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read credentials from {path}: {exc}",
                         hint="fix or remove the file, then `hyperrun login` again") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("auths", {}), dict):
        raise UsageError(f"{path}: `auths` is not a mapping",
                         hint="fix or remove the file, then `hyperrun login` again")
    return doc


def _find(doc: dict[str, Any], host: str, path: Path) -> Credentials | None:
    for key, entry in doc.get("auths", {}).items():
        if registry_host(key) != host or not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                sep = ""
            if not sep:
                raise UsageError(f"{path}: the `auth` of {key} is not base64 of user:password",
                                 hint=f"run `hyperrun login {host}` again")
            return Credentials(user, password)
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"])
    return None
