"""What the benchmark verbs share: the progress bar, the count checks, the output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hyperrun.cli.progress import LiveProgress
from hyperrun.errors import UsageError
from hyperrun.log import escape

STAGES = {"warmup": "warming up", "measure": "measuring", "teardown": "waiting for the VMs "
          "to go", "cli": "timing the CLI", "start": "starting containers",
          "settle": "letting them settle", "check": "checking they answer",
          "remove": "removing them"}


def count(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise UsageError(f"invalid {name} {value}", hint=f"give {low} to {high}")
    return value


class Bar(LiveProgress):
    """The progress of the runs on stderr with rich, or nothing (--json -, no terminal)."""

    def __init__(self, stream: TextIO, quiet: bool) -> None:
        self._rich = None if quiet or not stream.isatty() else Progress(
            TextColumn("{task.description}", markup=False), BarColumn(bar_width=40),
            MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(file=stream, highlight=False), transient=True)
        self._task: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._rich is None:
            return
        if done == 0:
            if self._task is not None:
                self._rich.remove_task(self._task)
            self._task = self._rich.add_task(STAGES.get(stage, stage), total=total)
        self._rich.update(self._task, completed=done)


def emit(json_to: str | None, report: dict[str, Any],
         table: Callable[[dict[str, Any]], list[str]]) -> int:
    """The report as JSON (to stdout alone with `-`, or to a file) and as a table."""
    text = json.dumps(report, indent=2) + "\n"
    if json_to == "-":
        sys.stdout.write(text)
        return 0
    if json_to:
        Path(json_to).write_text(text)
    print("\n".join(escape(line) for line in table(report)))
    return 0


def seconds(stats: dict[str, float] | None) -> str:
    if not stats:
        return "      -" * 5
    return "".join(f"{stats[k]:7.3f}" for k in ("min", "p50", "p90", "p99", "max"))


def environment_line(env: dict[str, Any]) -> str:
    """A benchmark's environment in one line: accelerator, CPU, QEMU and guest kernel."""
    return (f"accelerator {env['accelerator']}; {env['host_cpu'] or 'CPU unknown'}, "
            f"{env['host_cores']} cores; QEMU {env['qemu_version']}, guest kernel "
            f"{env['guest_kernel_version'] or 'unknown'}")
