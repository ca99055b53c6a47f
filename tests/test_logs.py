"""Reading and following container logs as the monitor writes them (no VM, no monitor).

The writer here imitates monitor/logfile.c: one record per line, rotation by renaming.
test_monitor.py checks the monitor's own side of the format.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from hyperrun.cli.lifecycle import parse_signal, parse_time
from hyperrun.cli.run import parse_log_opts
from hyperrun.containers import logs, records
from hyperrun.errors import UsageError
from hyperrun.store import Store


class Writer:
    def __init__(self, files: records.Paths, max_size: int, max_files: int) -> None:
        self.files, self.max_size, self.max_files = files, max_size, max_files
        self.t = 1_700_000_000 * 10**9

    def write(self, data: bytes, stream: str = "stdout") -> None:
        self.t += 1000
        rec = (f"{self.t // 10**9}.{self.t % 10**9:09d} {stream} {len(data)}\n".encode()
               + data + b"\n")
        log = self.files.log
        if log.exists() and log.stat().st_size + len(rec) > self.max_size:
            for k in range(self.max_files - 2, 0, -1):
                older = log.with_name(f"{log.name}.{k}")
                if older.exists():
                    older.rename(log.with_name(f"{log.name}.{k + 1}"))
            log.rename(log.with_name(log.name + ".1"))
        with log.open("ab") as f:
            f.write(rec)


@pytest.fixture
def files(tmp_path: Path) -> records.Paths:
    p = records.paths(Store(tmp_path), "a" * 64)
    p.dir.mkdir(parents=True)
    return p


def test_records_come_back_in_order_across_rotated_files(files: records.Paths) -> None:
    w = Writer(files, max_size=200, max_files=3)
    for i in range(40):
        w.write(f"line {i}\n".encode(), "stdout" if i % 2 else "stderr")
    got = list(logs.read_all(files))
    names = sorted(p.name for p in files.dir.iterdir())
    assert names == ["container.log", "container.log.1", "container.log.2"]
    assert sum((files.dir / n).stat().st_size for n in names) <= 3 * 200
    # The newest lines are kept, oldest first, each with its stream.
    assert got[-1] == logs.Record(w.t, "stdout", b"line 39\n")
    assert [r.data for r in got] == [f"line {i}\n".encode() for i in range(40 - len(got), 40)]
    assert {r.stream for r in got} == {"stdout", "stderr"}


def test_binary_data_and_partial_lines_pass_unchanged(files: records.Paths) -> None:
    w = Writer(files, 1 << 20, 3)
    blob = bytes(range(256)) + b"\n\n"
    w.write(blob)
    w.write(b"no newline")
    assert [r.data for r in logs.read_all(files)] == [blob, b"no newline"]


def test_a_damaged_record_is_skipped(files: records.Paths) -> None:
    Writer(files, 1 << 20, 3).write(b"good\n")
    with files.log.open("ab") as f:
        f.write(b"garbage that is no header\n")
        f.write(b"1.000000001 stdout 99999999\nxx\n")
    Writer(files, 1 << 20, 3).write(b"after\n")
    assert [r.data for r in logs.read_all(files)] == [b"good\n", b"after\n"]


def test_a_slow_follower_loses_nothing_within_the_bound(files: records.Paths) -> None:
    """Rotations while the follower sleeps: it goes on from its file to the next."""
    w = Writer(files, max_size=4000, max_files=3)
    w.write(b"first\n")
    done = threading.Event()
    got: list[bytes] = []

    def follow() -> None:
        for record in logs.follow(files, done.is_set):
            got.append(record.data)
            if len(got) % 10 == 0:
                time.sleep(0.05)  # a reader slower than the writer

    reader = threading.Thread(target=follow)
    reader.start()
    for i in range(60):  # two rotations, all still within 3 files
        w.write(f"line {i:04d} ".encode() + b"x" * 100 + b"\n")
        if i % 20 == 0:
            time.sleep(0.02)
    time.sleep(0.5)
    done.set()
    reader.join(timeout=10)
    assert got == [b"first\n"] + [f"line {i:04d} ".encode() + b"x" * 100 + b"\n"
                                  for i in range(60)]


def test_follow_ends_when_the_container_has(files: records.Paths) -> None:
    Writer(files, 1 << 20, 3).write(b"only\n")
    started = time.monotonic()
    assert [r.data for r in logs.follow(files, lambda: True)] == [b"only\n"]
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("opts, want", [
    ([], (10 << 20, 3)),
    (["max-size=1m", "max-file=2"], (1 << 20, 2)),
    (["max-size=64k"], (64 << 10, 3)),
])
def test_log_options(opts: list[str], want: tuple[int, int]) -> None:
    got = parse_log_opts(opts)
    assert (got["log_max_size"], got["log_max_files"]) == want


@pytest.mark.parametrize("opt", ["max-size=0", "max-size=1x", "max-file=0", "max-file=a",
                                 "colour=blue", "max-size=1"])
def test_bad_log_options(opt: str) -> None:
    with pytest.raises(UsageError):
        parse_log_opts([opt])


def test_signals_by_name_and_number() -> None:
    assert parse_signal("TERM") == parse_signal("SIGTERM") == parse_signal("15") == 15
    assert parse_signal("kill") == 9
    for bad in ("NOPE", "0", "999", ""):
        with pytest.raises(UsageError):
            parse_signal(bad)


def test_times_for_since_and_until() -> None:
    now = 1_800_000_000.0
    assert parse_time("10m", now) == now - 600
    assert parse_time("1h30m", now) == now - 5400
    assert parse_time("1700000000", now) == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20Z", now) == 1_700_000_000
    with pytest.raises(UsageError):
        parse_time("yesterday", now)
