"""Restart policies on records alone: parsing, and which ends start a container again."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cli_store import hyperrun, one_line_error, store_with_image

from hyperrun.containers import restart
from hyperrun.containers.records import Container, Settings
from hyperrun.errors import UsageError


@pytest.mark.parametrize("text, want", [
    ("no", ("no", 0)), ("always", ("always", 0)), ("unless-stopped", ("unless-stopped", 0)),
    ("on-failure", ("on-failure", 0)), ("on-failure:5", ("on-failure", 5)),
])
def test_policies(text: str, want: tuple[str, int]) -> None:
    assert restart.parse_policy(text) == want


@pytest.mark.parametrize("text", ["sometimes", "on-failure:", "on-failure:-1", "always:3", ""])
def test_bad_policies(text: str) -> None:
    with pytest.raises(UsageError):
        restart.parse_policy(text)


def _ended(policy: str, status: int, count: int = 0, by_hand: bool = False) -> Container:
    c = Container("a" * 64, "c", "busybox", "sha256:" + "0" * 64, ("true",), 0.0,
                  settings=Settings(restart=policy))
    return replace(c, exit_status=status, restart_count=count, manually_stopped=by_hand)


@pytest.mark.parametrize("c, again", [
    (_ended("no", 1), False),
    (_ended("always", 0), True),
    (_ended("unless-stopped", 0), True),
    (_ended("always", 0, by_hand=True), False),
    (_ended("on-failure", 0), False),
    (_ended("on-failure", 3), True),
    (_ended("on-failure:2", 3, count=1), True),
    (_ended("on-failure:2", 3, count=2), False),
    (_ended("on-failure:2", 3, count=1, by_hand=True), False),
])
def test_which_ends_restart(c: Container, again: bool) -> None:
    assert restart.wants_restart(c) is again


def test_restart_and_rm_conflict(tmp_path) -> None:
    root = store_with_image(tmp_path)
    one_line_error(hyperrun(root, "run", "--rm", "--restart", "always", "busybox", "true"),
                   125, "--restart and --rm cannot go together")
    one_line_error(hyperrun(root, "run", "--restart", "maybe", "busybox", "true"),
                   125, "invalid restart policy")
