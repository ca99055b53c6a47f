"""Image references normalise exactly as docker's do."""

from __future__ import annotations

import pytest

from hyperrun.errors import UsageError
from hyperrun.reference import Reference, parse, parse_tag

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("user/app/sub:v1", "docker.io/user/app/sub:v1", "user/app/sub:v1"),
        ("library/sub/x", "docker.io/library/sub/x:latest", "library/sub/x:latest"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/app:1", "localhost:5000/app:1", "localhost:5000/app:1"),
        ("registry.example.com/team/app:2.0", "registry.example.com/team/app:2.0",
         "registry.example.com/team/app:2.0"),
        ("host:5000/repo:tag", "host:5000/repo:tag", "host:5000/repo:tag"),
        ("[::1]:5000/repo", "[::1]:5000/repo:latest", "[::1]:5000/repo:latest"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
        (f"busybox:1.36@{DIGEST}", f"docker.io/library/busybox:1.36@{DIGEST}",
         f"busybox:1.36@{DIGEST}"),
        ("Example.com/app", "Example.com/app:latest", "Example.com/app:latest"),
        ("a_b__c-d--e/x.y", "docker.io/a_b__c-d--e/x.y:latest", "a_b__c-d--e/x.y:latest"),
        ("busybox:Tag_1.x-y", "docker.io/library/busybox:Tag_1.x-y", "busybox:Tag_1.x-y"),
    ],
)
def test_normalises_like_docker(text: str, full: str, familiar: str) -> None:
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert parse(str(ref)) == ref  # the full form is a fixed point


def test_parts() -> None:
    ref = parse(f"host:5000/team/app:1.0@{DIGEST}")
    assert ref == Reference("host:5000", "team/app", "1.0", DIGEST)
    assert ref.name == "host:5000/team/app"
    assert ref.familiar_name == "host:5000/team/app"


def test_digest_alone_gets_no_default_tag() -> None:
    assert parse(f"busybox@{DIGEST}").tag is None
    assert parse("busybox", default_tag=False).tag is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Busybox",  # uppercase repository
        "user/App",
        "busybox:",
        "busybox:-tag",  # tags start with a word character
        "busybox:" + "t" * 129,
        "busybox@sha256:abc",  # digest too short
        "busybox@sha256:" + "AB" * 32,  # uppercase digest
        "busybox@md5:" + "ab" * 16,
        "a" * 64,  # looks like an image id
        "-busybox",
        "busybox_",
        "user//app",
        "/busybox",
        "busybox/",
        "bus..box",
        "host:port/app",
        "a" * 256,
        "busy box",
    ],
)
def test_invalid_references_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(text)
    assert "\n" not in info.value.message
    assert info.value.hint


def test_uppercase_message_says_lowercase() -> None:
    with pytest.raises(UsageError, match="must be lowercase"):
        parse("Busybox")


def test_new_tags_refuse_digests() -> None:
    assert str(parse_tag("app")) == "docker.io/library/app:latest"
    with pytest.raises(UsageError, match="digest"):
        parse_tag(f"app@{DIGEST}")
