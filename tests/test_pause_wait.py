"""pause, unpause, wait and stats on records alone (no VM): errors, and what is stopped.

A running container going through all of them is in test_pause_stats_vm.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_store import hyperrun, make, ok, one_line_error, store_with_image

from hyperrun.containers import records
from hyperrun.store import Store


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return store_with_image(tmp_path)


def test_pausing_a_stopped_container_is_an_error(root: Path) -> None:
    make(root, "done", exit_status=0)
    one_line_error(hyperrun(root, "pause", "done"), 125, "Container done is not running")
    one_line_error(hyperrun(root, "unpause", "done"), 125, "Container done is not paused")


def test_a_container_still_being_set_up_cannot_be_paused(root: Path) -> None:
    make(root, "starting")  # its `run` (this process) has not started the VM yet
    one_line_error(hyperrun(root, "pause", "starting"), 125, "Container starting is not running")


def test_unknown_names(root: Path) -> None:
    one_line_error(hyperrun(root, "pause", "nope"), 125, "no such container: nope")
    one_line_error(hyperrun(root, "unpause", "nope"), 125, "no such container: nope")
    one_line_error(hyperrun(root, "stats", "--no-stream", "nope"), 1,
                   "Error: No such container: nope")


def test_each_name_is_tried_and_every_failure_reported(root: Path) -> None:
    make(root, "done", exit_status=0)
    proc = hyperrun(root, "pause", "nope", "done")
    assert proc.returncode == 125 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and "no such container: nope" in lines[0]
    assert "Container done is not running" in lines[1]


def test_wait_prints_the_status_of_a_stopped_container_at_once(root: Path) -> None:
    make(root, "three", exit_status=3)
    make(root, "zero", exit_status=0)
    assert ok(hyperrun(root, "wait", "three", "zero")) == "3\n0\n"


def test_wait_reports_unknown_names_and_prints_the_others(root: Path) -> None:
    make(root, "three", exit_status=3)
    proc = hyperrun(root, "wait", "nope", "three")
    assert proc.returncode == 1 and proc.stdout == "3\n"
    one_line_error(proc, 1, "Error: No such container: nope")


def test_wait_records_a_container_whose_run_was_killed_as_137(root: Path) -> None:
    c = make(root, "orphan")
    record = records.paths(Store(root), c.id).record
    data = json.loads(record.read_text())
    data["owner_pid"] = 2 ** 22 + 1  # a pid no process has: its `run` is gone
    record.write_text(json.dumps(data))
    proc = hyperrun(root, "wait", "orphan")
    assert proc.returncode == 0 and proc.stdout == "137\n"


def test_stats_of_nothing_running_is_the_header(root: Path) -> None:
    make(root, "done", exit_status=0)
    out = ok(hyperrun(root, "stats", "--no-stream"))
    assert out.split("\n")[0].split() == ["CONTAINER", "ID", "NAME", "CPU", "%", "MEM",
                                          "USAGE", "/", "LIMIT", "MEM", "%", "NET", "I/O",
                                          "BLOCK", "I/O", "PIDS"]
    assert out.count("\n") == 1
    assert ok(hyperrun(root, "stats", "--no-stream", "--format", "json")) == ""


def test_stats_of_a_stopped_container_named_is_zeros(root: Path) -> None:
    c = make(root, "done", exit_status=0)
    out = ok(hyperrun(root, "stats", "--no-stream", "--format",
                      "{{.ID}} {{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.BlockIO}} {{.PIDs}}",
                      "done"))
    assert out == f"{c.id[:12]} done 0.00% 0B / 0B 0B / 0B 0\n"
    one_line_error(hyperrun(root, "stats", "--no-stream", "--format", "{{.Cpu}}", "done"),
                   125, ".Cpu")


def test_stats_refreshes_until_interrupted(root: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "hyperrun", "stats"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HYPERRUN_ROOT": str(root)})
    time.sleep(3.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err == ""
    headers = [line for line in out.splitlines() if line.startswith("CONTAINER ID")]
    assert len(headers) >= 2 and len(headers) == len(out.splitlines())  # one a second
