"""Image references, parsed and normalised exactly as docker (distribution/reference) does."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hyperrun import digest as digests
from hyperrun.errors import UsageError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

# The grammar of github.com/distribution/reference/regexp.go.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_ANCHORED_TAG_RE = re.compile(rf"^{_TAG}$")

_HINT = "use NAME[:TAG] or NAME@sha256:DIGEST, e.g. busybox:latest or registry:5000/team/app:1.0"


@dataclass(frozen=True)
class Reference:
    """A normalised reference: `domain/path[:tag][@digest]`; at least one of tag and digest."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The full repository name, e.g. `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as `docker images` shows it, e.g. `busybox` or `user/app`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        if self.path.startswith(OFFICIAL_PREFIX) and self.path.count("/") == 1:
            return self.path[len(OFFICIAL_PREFIX):]
        return self.path

    @property
    def familiar(self) -> str:
        """The short form docker prints, e.g. `busybox:latest`."""
        return self.familiar_name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def _bad(text: str, why: str) -> UsageError:
    return UsageError(f"invalid reference format {text!r}: {why}", hint=_HINT)


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise a reference (`busybox` -> docker.io/library/busybox:latest).

    Without a tag or digest, `latest` is assumed unless default_tag is False.
    """
    if not text:
        raise _bad(text, "empty")
    if digests.is_hex64(text):
        raise _bad(text, "cannot specify 64-byte hexadecimal strings as a repository name")
    match = _REFERENCE_RE.match(text)
    if match is None:
        if _REFERENCE_RE.match(text.lower()):
            raise _bad(text, "repository name must be lowercase")
        raise _bad(text, "not a valid NAME[:TAG][@DIGEST]")
    name, tag, digest = match.groups()
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise _bad(text, f"repository name longer than {NAME_TOTAL_LENGTH_MAX} characters")
    if digest is not None:
        # hyperrun only ever verifies sha256; anything else could never be matched.
        if not digests.is_digest(digest):
            raise _bad(text, "only lowercase sha256:<64 hex digits> digests are supported")
    domain, path = _split_domain(name)
    if path != path.lower():
        raise _bad(text, "repository name must be lowercase")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def parse_tag(text: str) -> Reference:
    """Parse NAME[:TAG] for naming a new image: a digest is refused, `latest` is the default."""
    ref = parse(text)
    if ref.digest is not None:
        raise UsageError(
            f"refusing to create a tag with a digest reference: {text!r}",
            hint="give the new image a NAME[:TAG] without @sha256:...",
        )
    return ref


def is_tag(text: str) -> bool:
    """True if text is a syntactically valid tag on its own (`latest`, `1.0`)."""
    return bool(_ANCHORED_TAG_RE.match(text))


def _split_domain(name: str) -> tuple[str, str]:
    # Same rule as docker: the first component is a registry only if it looks like a host
    # (contains '.' or ':', or is 'localhost') and is not uppercase-bearing.
    first, sep, rest = name.partition("/")
    if not sep or (
        "." not in first and ":" not in first and first != "localhost" and first.lower() == first
    ):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path
