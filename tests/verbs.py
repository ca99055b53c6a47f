"""Shared by the image verb tests: the CLI run in-process or as a command, small images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import ImageSpec, directory, dump, file, tar_bytes, write_tar

from hyperrun.cli import main
from hyperrun.store import Store

REPO = Path(__file__).resolve().parent.parent
BASE = tar_bytes(directory("etc"), file("etc/os-release", "ID=test\n"),
                 file("bin/tool", "#!/bin/sh\n", mode=0o755))
TOP = tar_bytes(file("etc/x", "hello from the top layer\n" * 40))
LONG_RUN = "/bin/sh -c apt-get update && apt-get install -y curl ca-certificates git"


@dataclass(frozen=True)
class Result:
    status: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture(name="cli")
def cli_fixture(store: Store, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> Cli:
    """hyperrun's command line, in this process, against the test store."""
    monkeypatch.setenv("HYPERRUN_ROOT", str(store.root))

    def run(*argv: str) -> Result:
        status = main(list(argv))
        captured = capsys.readouterr()
        return Result(status, captured.out, captured.err)
    return run


def hyperrun(store: Store, *argv: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "hyperrun", *argv],
                          env={**os.environ, "HYPERRUN_ROOT": str(store.root)}, cwd=REPO,
                          timeout=120, **kw)


@dataclass
class WithHistory(ImageSpec):
    history: list[dict[str, Any]] = field(default_factory=list)

    def config_bytes(self) -> bytes:
        doc = json.loads(super().config_bytes())
        doc["history"] = self.history
        return dump(doc)


def one_error(result: Result, *words: str) -> None:
    assert result.status == 125, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and "(hint: " in lines[0], result.err
    for word in words:
        assert word in lines[0], lines[0]


def load(cli: Cli, files: dict[str, Any], path: Path) -> None:
    assert cli("load", "-q", "-i", str(write_tar(files, path))).status == 0


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[1:]]


def debugfs(disk: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(disk)], check=True,
                          capture_output=True, text=True).stdout
