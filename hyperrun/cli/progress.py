"""Pull progress as docker shows it: one line per layer on a terminal, plain lines otherwise.

On a terminal, rich redraws a line per layer (waiting, downloading with bytes and rate,
verifying, done). Elsewhere each state change is one line, as `docker pull | cat` prints
them. Quiet prints nothing. Download threads report here concurrently. Everything shown
is escaped (log.escape) and never read as rich markup: parts of it come from registries.
"""

from __future__ import annotations

import enum
import threading
from types import TracebackType
from typing import Self, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from hyperrun.log import escape


class Mode(enum.StrEnum):
    TTY = "tty"
    PLAIN = "plain"
    QUIET = "quiet"


def short(digest: str) -> str:
    return escape(digest.removeprefix("sha256:")[:12])


class LiveProgress:
    """A rich progress display that is shown while the context is open, if there is one."""

    _rich: Progress | None = None

    def __enter__(self) -> Self:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()


class PullProgress(LiveProgress):
    """Progress of one pull; a context manager, safe to call from several threads."""

    def __init__(self, stream: TextIO, mode: Mode) -> None:
        self.stream = stream
        self.mode = mode
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._rich: Progress | None = None
        if mode == Mode.TTY:
            self._rich = Progress(
                TextColumn("{task.fields[layer]}:", markup=False),
                TextColumn("{task.description:<18}", markup=False),
                BarColumn(bar_width=40),
                DownloadColumn(binary_units=False),
                TransferSpeedColumn(),
                console=Console(file=stream, highlight=False),
                auto_refresh=True,
                refresh_per_second=8,
            )

    @classmethod
    def for_stream(cls, stream: TextIO, quiet: bool = False) -> PullProgress:
        if quiet:
            return cls(stream, Mode.QUIET)
        return cls(stream, Mode.TTY if stream.isatty() else Mode.PLAIN)

    def message(self, text: str) -> None:
        """A line of its own (`latest: Pulling from library/ubuntu`, `Digest: ...`)."""
        if self.mode == Mode.QUIET:
            return
        text = escape(text)
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
            return
        with self._lock:
            print(text, file=self.stream, flush=True)

    def layer(self, digest: str, status: str, total: int | None = None) -> None:
        """Add a layer's line, or change its status (`Waiting`, `Downloading`, ...)."""
        if self.mode == Mode.QUIET:
            return
        shown = escape(status)
        if self._rich is not None:
            with self._lock:
                task = self._tasks.get(digest)
                if task is None:
                    self._tasks[digest] = self._rich.add_task(
                        shown, total=total, layer=short(digest), start=False)
                    return
            if status == "Downloading":
                self._rich.start_task(task)
            done = status in ("Download complete", "Pull complete", "Already exists")
            if total is not None:
                self._rich.update(task, total=total)
            self._rich.update(task, description=shown)
            if done:
                self._rich.update(task, completed=self._rich.tasks[task].total or 0)
            self._rich.refresh()  # a status change shows at once, not at the next tick
            return
        if status == "Downloading":  # no byte counts in a log; docker omits them too
            return
        with self._lock:
            print(f"{short(digest)}: {shown}", file=self.stream, flush=True)

    def finish(self) -> None:
        """The layers are done: leave their final lines, print later messages below them."""
        if self._rich is not None:
            self._rich.stop()

    def advance(self, digest: str, nbytes: int) -> None:
        if self._rich is not None and digest in self._tasks:
            self._rich.advance(self._tasks[digest], nbytes)

    def reset(self, digest: str) -> None:
        """Start a layer's byte count again (a retried download)."""
        if self._rich is not None and digest in self._tasks:
            self._rich.reset(self._tasks[digest])
