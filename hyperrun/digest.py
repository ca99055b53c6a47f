"""Content digests: the one definition of what a sha256 digest looks like, and computing one.

hyperrun verifies sha256 only; a digest is `sha256:` and 64 lowercase hex digits, as the
OCI image spec writes it. Registries, archives, the store and references all use this.
"""

from __future__ import annotations

import hashlib
import re

ALGORITHM = "sha256"
PATTERN = r"sha256:[a-f0-9]{64}"
_DIGEST_RE = re.compile(rf"^{PATTERN}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")


def is_digest(text: object) -> bool:
    """True if text is a well-formed `sha256:<64 hex>` digest."""
    return isinstance(text, str) and bool(_DIGEST_RE.match(text))


def is_hex64(text: str) -> bool:
    return bool(_HEX64_RE.match(text))


def sha256(data: bytes) -> str:
    """The digest of data, e.g. `sha256:e3b0c442...`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hexpart(digest: str) -> str:
    """The 64 hex digits of a digest (checked), e.g. for a file name."""
    if not is_digest(digest):
        raise ValueError(f"unsupported digest {digest[:80]!r}")
    return digest[len("sha256:"):]


class Hasher:
    """A running sha256 whose result is already in digest form."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._sha.update(data)

    def digest(self) -> str:
        return "sha256:" + self._sha.hexdigest()
