"""`inspect`, `rename` and generated names, on records made by the records API (no VM)."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import pytest
from cli_store import hyperrun, image_id, make, ok, one_line_error, store_with_image

from hyperrun.containers import names, records
from hyperrun.store import Store


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return store_with_image(tmp_path)


def inspect(root: Path, *args: str) -> list[dict]:
    return json.loads(ok(hyperrun(root, "inspect", *args)))


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_container_in_dockers_shape(root: Path) -> None:
    c = make(root, "web", exit_status=3, image_id=image_id(root), entrypoint=("/bin/sh", "-c"),
             command=("exit 3",), env=("PATH=/bin", "A=1"), workdir="/srv", user="app",
             hostname="h1", tty=True, open_stdin=True, uri="qemu:///system", accel="tcg",
             kernel="/k/vmlinuz", base_disk="/d/base.ext4")
    [doc] = inspect(root, "web")
    assert doc["Id"] == c.id and doc["Name"] == "/web"
    assert doc["Path"] == "/bin/sh" and doc["Args"] == ["-c", "exit 3"]
    assert doc["Image"] == image_id(root)
    state = doc["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 3 and state["Pid"] == 0
    assert state["Running"] is False and state["OOMKilled"] is False and state["Dead"] is False
    assert parse_time(state["FinishedAt"]) >= parse_time(doc["Created"])
    assert state["StartedAt"] == "0001-01-01T00:00:00Z"  # this one's VM never started
    assert doc["Config"] == {"Image": "busybox", "Cmd": ["exit 3"],
                             "Entrypoint": ["/bin/sh", "-c"], "Env": ["PATH=/bin", "A=1"],
                             "WorkingDir": "/srv", "User": "app", "Hostname": "h1",
                             "Tty": True, "OpenStdin": True}
    assert doc["HostConfig"] == {"NanoCpus": 2 * 10**9, "Memory": 256 << 20,
                                 "AutoRemove": False, "Privileged": False, "CapAdd": None,
                                 "CapDrop": None,
                                 "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                                 "NetworkMode": "none", "PortBindings": {}, "Dns": [],
                                 "DnsSearch": [], "ExtraHosts": None,
                                 "Binds": None, "Tmpfs": None}
    assert doc["NetworkSettings"] == {"Ports": {}, "IPAddress": "", "Gateway": ""}
    hr = doc["Hyperrun"]
    assert hr["URI"] == "qemu:///system" and hr["Accelerator"] == "tcg"
    assert hr["Domain"] == c.domain and hr["DomainUUID"] == c.domain_uuid
    assert hr["Kernel"] == "/k/vmlinuz" and hr["BaseDisk"] == "/d/base.ext4"
    assert hr["Overlay"] == str(records.paths(Store(root), c.id).overlay)


def test_a_container_still_being_set_up_is_created(root: Path) -> None:
    make(root, "starting")  # its owner (this process) lives, no VM exists: Created
    [doc] = inspect(root, "starting")
    assert doc["State"]["Status"] == "created" and doc["State"]["ExitCode"] == 0
    assert doc["State"]["FinishedAt"] == "0001-01-01T00:00:00Z"


def test_image_in_dockers_shape(root: Path) -> None:
    [doc] = inspect(root, "busybox")
    assert doc["Id"] == image_id(root)
    assert doc["RepoTags"] == ["busybox:latest"]
    assert len(doc["RepoDigests"]) == 1 and doc["RepoDigests"][0].startswith("busybox@sha256:")
    assert doc["Architecture"] == "amd64" and doc["Os"] == "linux"
    assert doc["Created"] == "2020-09-13T12:26:40Z" and doc["Size"] > 0
    assert doc["Config"] == {"Cmd": ["echo hi"], "Entrypoint": ["/bin/sh", "-c"],
                             "Env": ["A=1"], "WorkingDir": "/srv", "User": "app"}
    assert doc["RootFS"]["Type"] == "layers" and len(doc["RootFS"]["Layers"]) == 1
    assert inspect(root, image_id(root)[7:19]) == [doc]  # by short id too


def test_a_container_is_found_before_an_image_of_the_same_name(root: Path) -> None:
    c = make(root, "busybox", exit_status=0)
    assert [d["Id"] for d in inspect(root, "busybox")] == [c.id]
    assert [d["Id"] for d in inspect(root, "--type", "image", "busybox")] == [image_id(root)]
    assert [d["Id"] for d in inspect(root, "--type", "container", "busybox")] == [c.id]


def test_missing_objects_are_reported_and_the_others_printed(root: Path) -> None:
    c = make(root, "web", exit_status=0)
    proc = hyperrun(root, "inspect", "web", "nope", "busybox")
    assert proc.returncode == 1
    assert [d["Id"] for d in json.loads(proc.stdout)] == [c.id, image_id(root)]
    one_line_error(proc, 1, "Error: No such object: nope")

    proc = hyperrun(root, "inspect", "--type", "container", "nope1", "busybox", "web")
    assert [d["Id"] for d in json.loads(proc.stdout)] == [c.id]
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 2
    assert "No such container: nope1" in proc.stderr
    assert "No such container: busybox" in proc.stderr

    proc = hyperrun(root, "inspect", "--type", "image", "web")
    assert json.loads(proc.stdout) == []
    one_line_error(proc, 1, "Error: No such image: web")

    proc = hyperrun(root, "inspect", "Not/A:Reference!")
    one_line_error(proc, 1, "No such object")


def test_format_templates(root: Path) -> None:
    make(root, "web", exit_status=7, env=("A=1", "B=two words"))
    out = ok(hyperrun(root, "inspect", "-f", "{{.Name}} exited {{.State.ExitCode}}; "
                      "{{json .Config.Env}} {{.Config.Env}} {{.HostConfig.AutoRemove}}", "web"))
    assert out == '/web exited 7; ["A=1","B=two words"] [A=1 B=two words] false\n'
    out = ok(hyperrun(root, "inspect", "--format", "{{.Id}}", "web", "busybox"))
    assert out.splitlines() == [records.find(Store(root), "web").id, image_id(root)]
    out = ok(hyperrun(root, "inspect", "-f", "{{json .}}", "busybox"))
    assert json.loads(out) == inspect(root, "busybox")[0]
    out = ok(hyperrun(root, "inspect", "-f", "{{.NoSuchField}}|{{ .Name -}}  |", "web"))
    assert out == "<no value>|/web|\n"  # as Go prints a key the object lacks
    one_line_error(hyperrun(root, "inspect", "-f", "{{.Name.First}}", "web"), 125,
                   ".Name is not an object")


@pytest.mark.parametrize("template", ["{{.Name | upper}}", "{{range .Args}}x{{end}}", "{{",
                                      '{{printf "%s" .Name}}', "{{$x := .Name}}", "{{Name}}",
                                      "{{.Name.}}", "{{index .Args 0}}", "{{}}"])
def test_anything_beyond_the_subset_is_a_usage_error(root: Path, template: str) -> None:
    make(root, "web", exit_status=0)
    proc = hyperrun(root, "inspect", "-f", template, "web")
    one_line_error(proc, 125, "template")
    assert proc.stdout == ""


def test_text_from_outside_is_escaped_in_templates(root: Path) -> None:
    make(root, "web", exit_status=0, command=("echo", "\x1b[2J\rfake"))
    out = ok(hyperrun(root, "inspect", "-f", "{{.Args}} {{json .Args}}", "web"))
    assert "\x1b" not in out and "\r" not in out
    assert out == '[\\x1b[2J\\x0dfake] ["\\u001b[2J\\rfake"]\n'


def test_records_of_older_versions_are_inspected(root: Path) -> None:
    c = make(root, "old", exit_status=0)
    record = records.paths(Store(root), c.id).record
    data = json.loads(record.read_text())
    for key in ("settings", "started", "finished"):
        del data[key]
    record.write_text(json.dumps(data))
    [doc] = inspect(root, "old")
    assert doc["Path"] == "echo" and doc["Args"] == ["hi"]
    assert doc["Config"]["Cmd"] == ["echo", "hi"]
    assert doc["State"]["ExitCode"] == 0 and doc["HostConfig"]["Memory"] == 0


# ---- names ---------------------------------------------------------------------------------

def test_containers_without_a_name_get_unique_docker_style_names(root: Path) -> None:
    made = [make(root, exit_status=0) for _ in range(60)]
    assert len({c.name for c in made}) == 60
    for c in made:
        base = re.sub(r"\d+$", "", c.name)
        adjective, _, surname = base.partition("_")
        assert adjective in names.ADJECTIVES and surname in names.SURNAMES, c.name
    listed = ok(hyperrun(root, "ps", "-a", "--format", "{{.Names}}")).split()
    assert sorted(listed) == sorted(c.name for c in made)
    assert [d["Name"] for d in inspect(root, made[0].name)] == ["/" + made[0].name]


def test_a_generated_name_gets_a_number_on_collision() -> None:
    every = {f"{a}_{s}" for a in names.ADJECTIVES for s in names.SURNAMES}
    assert names.generate(every) in {f"{n}2" for n in every}
    assert re.fullmatch(names.NAME_RE, names.generate(set()))


# ---- rename --------------------------------------------------------------------------------

def test_rename(root: Path) -> None:
    c = make(root, "old", exit_status=0)
    make(root, "taken", exit_status=0)
    assert ok(hyperrun(root, "rename", "old", "new")) == ""
    assert [d["Id"] for d in inspect(root, "--type", "container", "new")] == [c.id]
    one_line_error(hyperrun(root, "inspect", "--type", "container", "old"), 1, "old")
    assert "new" in ok(hyperrun(root, "ps", "-a", "--format", "{{.Names}}")).split()
    one_line_error(hyperrun(root, "rename", "new", "taken"), 125, "already in use")
    one_line_error(hyperrun(root, "rename", "new", "new"), 125, "already named")
    one_line_error(hyperrun(root, "rename", "new", "bad/name"), 125, "invalid container name")
    one_line_error(hyperrun(root, "rename", "nope", "other"), 125, "no such container")
    one_line_error(hyperrun(root, "rename", c.id[:12], "-x"), 125)  # a flag it does not know
    assert ok(hyperrun(root, "rename", c.id[:12], "by-id")) == ""
    assert ok(hyperrun(root, "ps", "-a", "-f", f"id={c.id[:6]}", "--format", "{{.Names}}")) \
        == "by-id\n"


def test_a_rename_during_the_run_survives_the_run_recording_its_end(root: Path) -> None:
    """`run` holds the record it created; its exit must not bring the old name back."""
    store = Store(root)
    running = make(root, "before")
    ok(hyperrun(root, "rename", "before", "after"))
    records.record_exit(store, running, 0)
    assert ok(hyperrun(root, "ps", "-a", "--format", "{{.Names}} {{.State}}")) \
        == "after exited\n"
