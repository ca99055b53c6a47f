"""What a pull reports while it works; the CLI draws it (hyperrun/cli/progress.py)."""

from __future__ import annotations

from typing import Protocol


class PullProgress(Protocol):
    """Receives a pull's progress: messages, and per-layer status and byte counts."""

    def message(self, text: str) -> None:
        """A line of its own, e.g. `Digest: sha256:...`."""

    def layer(self, digest: str, status: str, total: int | None = None) -> None:
        """A layer's new status (`Waiting`, `Downloading`, `Pull complete`, ...)."""

    def advance(self, digest: str, nbytes: int) -> None:
        """nbytes more of a layer arrived."""

    def reset(self, digest: str) -> None:
        """A layer's download starts over."""

    def finish(self) -> None:
        """Every layer is done."""


class Silent:
    """A PullProgress that shows nothing."""

    def message(self, text: str) -> None:
        pass

    def layer(self, digest: str, status: str, total: int | None = None) -> None:
        pass

    def advance(self, digest: str, nbytes: int) -> None:
        pass

    def reset(self, digest: str) -> None:
        pass

    def finish(self) -> None:
        pass
