"""`ps` (--no-trunc, -f filters, --format) and `images --format`, on records made by the
records API (no VM; a running container's row is checked in test_inspect_vm.py)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from cli_store import hyperrun, image_id, make, ok, one_line_error, store_with_image

from hyperrun.containers import records
from hyperrun.store import Store


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return store_with_image(tmp_path)


def age(root: Path, c: records.Container, seconds: float) -> None:
    """Make c look created (and ended) seconds ago, as a record written then would say."""
    record = records.paths(Store(root), c.id).record
    data = json.loads(record.read_text())
    data["created"] -= seconds
    if data["finished"]:
        data["finished"] -= seconds
    record.write_text(json.dumps(data))


def names(root: Path, *args: str) -> list[str]:
    return ok(hyperrun(root, "ps", *args, "--format", "{{.Names}}")).split()


def test_status_is_worded_as_docker_words_it(root: Path) -> None:
    done = make(root, "done", exit_status=3)
    age(root, done, 180)
    make(root, "starting")  # its `run` (this process) is still setting it up
    out = ok(hyperrun(root, "ps", "-a")).splitlines()
    assert out[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                              "PORTS", "NAMES"]
    starting, finished = (re.split(r"\s{3,}", line) for line in out[1:])  # newest first
    assert starting[1:] == ["busybox", '"echo hi"', "Less than a second ago", "Created",
                            "starting"]
    assert finished[1:] == ["busybox", '"echo hi"', "3 minutes ago",
                            "Exited (3) 3 minutes ago", "done"]
    assert ok(hyperrun(root, "ps")).splitlines()[1:] == []  # nothing runs


def test_no_trunc(root: Path) -> None:
    c = make(root, "long", exit_status=0, command=("sh", "-c", "echo a long command line here"))
    short = ok(hyperrun(root, "ps", "-a"))
    assert c.id[:12] in short and c.id not in short and '"sh -c echo a long c…"' in short
    full = ok(hyperrun(root, "ps", "-a", "--no-trunc"))
    assert c.id in full and '"sh -c echo a long command line here"' in full
    assert ok(hyperrun(root, "ps", "-aq", "--no-trunc")) == c.id + "\n"
    assert ok(hyperrun(root, "ps", "-aq")) == c.id[:12] + "\n"


def test_filters(root: Path) -> None:
    by_id = image_id(root)
    make(root, "web-1", exit_status=0, image="busybox:latest", image_id=by_id)
    make(root, "web-2", exit_status=1, image="docker.io/library/busybox", image_id=by_id)
    make(root, "db", exit_status=0, image="other", image_id="sha256:" + "e" * 64)
    made = make(root, "setup", image="alpine")  # created
    assert sorted(names(root, "-f", "status=exited")) == ["db", "web-1", "web-2"]  # no -a
    assert names(root, "-f", "status=created") == ["setup"]
    assert sorted(names(root, "-f", "status=created", "-f", "status=exited")) == [
        "db", "setup", "web-1", "web-2"]  # one key: any value
    assert names(root, "-f", "status=running") == []
    assert names(root, "-f", "name=web") == []  # without -a only running ones
    assert sorted(names(root, "-a", "-f", "name=web")) == ["web-1", "web-2"]
    assert names(root, "-a", "-f", "name=^web-2$") == ["web-2"]
    assert names(root, "-a", "-f", "name=^/db$") == ["db"]  # docker's names start with /
    assert sorted(names(root, "-a", "-f", "name=web-1", "-f", "name=db")) == ["db", "web-1"]
    assert names(root, "-f", "name=-2", "-f", "name=db", "-f", "ancestor=busybox",
                 "-f", "status=exited") == ["web-2"]  # every key, any of its values
    for ancestor in ("busybox", "busybox:latest", by_id, by_id[7:19]):
        assert sorted(names(root, "-a", "-f", f"ancestor={ancestor}")) == ["web-1", "web-2"]
    assert names(root, "-a", "-f", "ancestor=other") == ["db"]  # an image no longer here
    assert names(root, "-a", "-f", f"id={made.id[:5]}") == ["setup"]
    assert names(root, "-a", "-f", "id=zz") == []


@pytest.mark.parametrize(("flt", "words"), [
    ("status=sleeping", ["status=sleeping"]), ("colour=red", ["colour"]),
    ("status", ["bad filter"]), ("name=(", ["name=("]),
])
def test_bad_filters(root: Path, flt: str, words: list[str]) -> None:
    one_line_error(hyperrun(root, "ps", "-a", "-f", flt), 125, *words)


def test_format_json_is_one_object_a_line(root: Path) -> None:
    a = make(root, "a", exit_status=2)
    make(root, "b")
    lines = ok(hyperrun(root, "ps", "-a", "--format", "json")).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["Names"] for r in rows] == ["b", "a"]
    row = rows[1]
    assert row["ID"] == a.id[:12] and row["Image"] == "busybox" and row["State"] == "exited"
    assert row["Command"] == '"echo hi"' and row["Status"].startswith("Exited (2) ")
    assert row["RunningFor"].endswith(" ago") and row["CPUs"] == "2"
    assert row["Memory"] == "256MiB"
    assert row["CreatedAt"].startswith(time.strftime("%Y-"))
    assert rows[0]["State"] == "created" and rows[0]["Status"] == "Created"


def test_format_templates(root: Path) -> None:
    c = make(root, "a", exit_status=0)
    age(root, c, 180)  # two `ps` a second apart then still word its age alike
    out = ok(hyperrun(root, "ps", "-a", "--format", "{{.ID}}: {{.Names}} ({{.CPUs}} CPUs, "
                      "{{.Memory}})"))
    assert out == f"{c.id[:12]}: a (2 CPUs, 256MiB)\n"
    table = ok(hyperrun(root, "ps", "-a", "--format", r"table {{.Names}}\t{{.State}}"))
    assert [line.split() for line in table.splitlines()] == [["NAMES", "STATE"], ["a", "exited"]]
    assert ok(hyperrun(root, "ps", "-a", "--format", "table")) == ok(hyperrun(root, "ps", "-a"))
    one_line_error(hyperrun(root, "ps", "-a", "--format", "{{.Nmes}}"), 125, ".Nmes")
    one_line_error(hyperrun(root, "ps", "-a", "--format", "{{.Names | upper}}"), 125,
                   "unsupported")


def test_text_from_outside_is_escaped(root: Path) -> None:
    make(root, "a", exit_status=0, image="busybox\x1b[2J", command=("echo", "\x1b]0;x\x07"))
    for args in (["-a"], ["-a", "--format", "{{.Image}} {{.Command}}"], ["-a", "--no-trunc"]):
        out = ok(hyperrun(root, "ps", *args))
        assert "\x1b" not in out and "\x07" not in out and "\\x1b" in out
    raw = json.loads(ok(hyperrun(root, "ps", "-a", "--format", "json")))
    assert raw["Image"] == "busybox\x1b[2J"  # JSON keeps the text, escaped by the encoder


def test_images_format(root: Path) -> None:
    rows = [json.loads(line) for line in
            ok(hyperrun(root, "images", "--format", "json")).splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["Repository"] == "busybox" and row["Tag"] == "latest"
    assert row["ID"] == image_id(root)[7:19] and row["Size"].endswith("B")
    assert row["CreatedSince"].endswith(" ago") and row["Digest"].startswith("sha256:")
    assert ok(hyperrun(root, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}",
                       "--no-trunc")) == f"busybox:latest {image_id(root)}\n"


def test_a_corrupt_record_is_reported_not_hidden(root: Path) -> None:
    good = make(root, "good", exit_status=0)
    bad = make(root, "bad", exit_status=0)
    records.paths(Store(root), bad.id).record.write_text("{not json")
    proc = hyperrun(root, "ps", "-a", "--format", "{{.Names}}")
    assert proc.returncode == 0 and proc.stdout == "good\n"
    warnings = proc.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("hyperrun: warning: container ")
    assert bad.id[:12] in warnings[0] and "cannot be read" in warnings[0]
    assert good.id[:12] not in proc.stderr
