"""What a container's processes are made of: spec pieces shared by run, start and exec.

Kept free of libvirt and the image store, so that `exec` into a running container (a
remote procedure call, not a boot) imports no more than it needs.
"""

from __future__ import annotations

import signal
from contextlib import AbstractContextManager
from typing import Protocol

from hyperrun import capabilities
from hyperrun.containers.records import Settings
from hyperrun.spec import ProcessSpec, WinSize

# What a foreground run (or exec, or attach) passes on to the container's process, as
# docker's --sig-proxy does.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)


class Terminal(Protocol):
    """The user's terminal for a -t container (the CLI implements it)."""

    follows_resizes: bool  # whether size() changes are worth forwarding (SIGWINCH)

    def size(self) -> WinSize | None: ...

    def raw(self) -> AbstractContextManager[None]: ...


def merge_env(base: tuple[str, ...], overrides: tuple[str, ...]) -> tuple[str, ...]:
    """Later KEY=VALUE entries replace earlier ones with the same key, keeping order."""
    merged: dict[str, str] = {}
    for entry in (*base, *overrides):
        key = entry.partition("=")[0]
        merged.pop(key, None)
        merged[key] = entry
    return tuple(merged.values())


def main_process(s: Settings) -> ProcessSpec:
    """The main process of a container, as it was first started."""
    return ProcessSpec(args=s.args, env=s.env, cwd=s.workdir or "/", user=s.user, tty=s.tty,
                       stdin=s.open_stdin, capabilities=capability_set(s))


def capability_set(s: Settings) -> frozenset[str] | None:
    """The capabilities recorded for a container (None: privileged, all of them)."""
    if s.privileged:
        return None
    return (capabilities.DEFAULT | frozenset(s.cap_add)) - frozenset(s.cap_drop)
