"""Volumes without a VM: -v, --mount and --tmpfs parsing, records, XML, the volume verbs."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from cli_store import hyperrun, make, ok, one_line_error
from test_domain_xml import _vm

from hyperrun.cli import build_parser
from hyperrun.cli import run as cli_run
from hyperrun.containers import mounts, volumes
from hyperrun.errors import UsageError
from hyperrun.spec import Mount, MountType, Share
from hyperrun.store import Store
from hyperrun.vm.domain_xml import domain_xml

BIND, VOLUME, TMPFS = MountType.BIND, MountType.VOLUME, MountType.TMPFS


def _mounts(*argv: str) -> tuple[Mount, ...]:
    return cli_run.to_spec(build_parser().parse_args(["run", *argv, "img"])).mounts


@pytest.mark.parametrize(("text", "want"), [
    ("/srv/data:/data", Mount(BIND, "/data", "/srv/data")),
    ("/srv/data/:/data/:ro", Mount(BIND, "/data", "/srv/data", readonly=True)),
    ("/srv//x:/a/../b:rw", Mount(BIND, "/b", "/srv/x")),
    ("cache:/var/cache", Mount(VOLUME, "/var/cache", "cache")),
    ("my.vol_1:/v:ro,nocopy", Mount(VOLUME, "/v", "my.vol_1", readonly=True, nocopy=True)),
    ("/scratch", Mount(VOLUME, "/scratch", anonymous=True)),
])
def test_volume_flag_as_docker_takes_it(text: str, want: Mount) -> None:
    assert mounts.parse_volume(text) == want


@pytest.mark.parametrize(("text", "words"), [
    ("data:/data:ro", None),  # accepted: a named volume
    ("./data:/data", "relative"),
    ("data/x:/data", "relative"),
    ("/srv:data", "not an absolute path"),
    ("/srv:/", "cannot be '/'"),
    ("/srv:/data:rx", "options are ro or rw"),
    ("/srv:/data:nocopy", "options are ro or rw"),
    ("x:/data", "neither an absolute host path nor a volume name"),
    ("-x:/data", "neither"),
    (":/data", "use -v"),
    ("/a:/b:ro:x", "use -v"),
    ("relative", "not an absolute path"),
    ("/srv:/da\nta", "control characters"),
])
def test_volume_flag_refused(text: str, words: str | None) -> None:
    if words is None:
        mounts.parse_volume(text)
        return
    with pytest.raises(UsageError) as err:
        mounts.parse_volume(text)
    assert words in err.value.message + (err.value.hint or "") and err.value.hint


@pytest.mark.parametrize(("text", "want"), [
    ("type=bind,source=/srv,target=/data", Mount(BIND, "/data", "/srv")),
    ("type=bind,src=/srv,dst=/data,readonly", Mount(BIND, "/data", "/srv", readonly=True)),
    ("type=bind,src=/srv,destination=/data,ro=true", Mount(BIND, "/data", "/srv", True)),
    ("type=bind,src=/srv,dst=/data,readonly=false", Mount(BIND, "/data", "/srv")),
    ("source=v1,target=/v", Mount(VOLUME, "/v", "v1")),
    ("type=volume,target=/v,volume-nocopy", Mount(VOLUME, "/v", anonymous=True, nocopy=True)),
    ("type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=700",
     Mount(TMPFS, "/t", tmpfs_size=64 << 20, tmpfs_mode=0o700)),
])
def test_mount_flag_as_docker_takes_it(text: str, want: Mount) -> None:
    assert mounts.parse_mount(text) == want


@pytest.mark.parametrize(("text", "words"), [
    ("type=bind,source=srv,target=/data", "absolute source"),
    ("type=bind,target=/data", "absolute source"),
    ("type=nfs,source=/srv,target=/data", "unknown type"),
    ("type=bind,source=/srv", "no target"),
    ("type=bind,source=/srv,target=data", "not an absolute path"),
    ("type=bind,source=/srv,target=/", "cannot be '/'"),
    ("type=bind,source=/srv,target=/d,colour=red", "unknown key"),
    ("type=bind,source=/srv,target=/d,target=/e", "repeated key"),
    ("type=bind,source=/srv,target=/d,readonly=maybe", "readonly takes"),
    ("type=tmpfs,source=/x,target=/t", "no source"),
    ("type=tmpfs,target=/t,tmpfs-size=lots", "size is bytes"),
    ("type=tmpfs,target=/t,tmpfs-mode=999", "mode is octal"),
    ("type=volume,source=v,target=/t,tmpfs-size=1m", "for type=tmpfs"),
    ("type=volume,source=../v,target=/t", "neither"),
])
def test_mount_flag_refused(text: str, words: str) -> None:
    with pytest.raises(UsageError) as err:
        mounts.parse_mount(text)
    assert words in err.value.message + (err.value.hint or "") and err.value.hint


@pytest.mark.parametrize(("text", "want"), [
    ("/tmp", Mount(TMPFS, "/tmp")),
    ("/run/x:size=1k,mode=0755,ro", Mount(TMPFS, "/run/x", readonly=True, tmpfs_size=1024,
                                          tmpfs_mode=0o755)),
])
def test_tmpfs_flag(text: str, want: Mount) -> None:
    assert mounts.parse_tmpfs(text) == want


@pytest.mark.parametrize("text", ["tmp", "/", "/t:size=0", "/t:mode=8", "/t:noexec",
                                  "/t:size=2t"])
def test_tmpfs_flag_refused(text: str) -> None:
    with pytest.raises(UsageError):
        mounts.parse_tmpfs(text)


def test_the_command_line_checks_mounts_together() -> None:
    assert _mounts("-v", "/a:/x", "--mount", "type=volume,dst=/y", "--tmpfs", "/z") == (
        Mount(BIND, "/x", "/a"), Mount(VOLUME, "/y", anonymous=True), Mount(TMPFS, "/z"))
    with pytest.raises(UsageError, match="duplicate mount point: /x"):
        _mounts("-v", "/a:/x", "--tmpfs", "/x/")
    with pytest.raises(UsageError, match="at most 16"):
        _mounts(*[arg for i in range(17) for arg in ("--tmpfs", f"/t{i}")])


def test_records_round_trip() -> None:
    for m in (Mount(BIND, "/d", "/srv", True), Mount(VOLUME, "/v", "n", anonymous=True,
                                                   nocopy=True),
              Mount(TMPFS, "/t", tmpfs_size=5, tmpfs_mode=0o700)):
        assert mounts.from_record(mounts.record(m)) == m


def test_bind_sources_are_created_and_must_be_directories(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b"
    mounts.check_bind_sources([Mount(BIND, "/d", str(missing))])
    assert missing.is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        mounts.check_bind_sources([Mount(BIND, "/d", str(tmp_path / "file"))])


def test_shares_and_guest_records(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.ensure()
    given = volumes.prepare(store, [
        Mount(BIND, "/d", str(tmp_path / "src")), Mount(TMPFS, "/t", tmpfs_size=4096),
        Mount(VOLUME, "/v", "named"), Mount(VOLUME, "/a", anonymous=True),
        Mount(BIND, "/r", str(tmp_path / "src"), readonly=True)])
    anonymous = given[3].source
    assert len(anonymous) == 64 and volumes.get(store, anonymous).anonymous
    assert (volumes.root(store) / "named" / "_data").is_dir()
    assert (volumes.root(store).stat().st_mode & 0o777) == 0o700
    shares = volumes.shares(store, "c" * 64, given)
    assert [s.tag for s in shares] == ["hr0", "hr1", "hr2", "hr3"]
    assert shares[0].source == tmp_path / "src" and not shares[0].readonly
    assert shares[1].source == volumes.root(store) / "named" / "_data"
    # A read-only share is exported from a read-only view, never from the source itself.
    assert shares[3].readonly and shares[3].source.parent == store.tmp
    assert volumes.guest_fields(store, given) == [
        ("mount", "virtiofs hr0 rw - /d"), ("mount", "tmpfs - rw size=4096,mode=1777 /t"),
        ("mount", "virtiofs hr1 copy - /v"), ("mount", "virtiofs hr2 copy - /a"),
        ("mount", "virtiofs hr3 ro - /r")]
    (volumes.root(store) / "named" / "_data" / "f").write_text("x")
    assert volumes.guest_fields(store, given)[2] == ("mount", "virtiofs hr1 rw - /v")


def test_virtiofs_shares_need_shared_memory_in_the_domain(tmp_path: Path) -> None:
    vm = replace(_vm(), shares=(Share("hr0", tmp_path), Share("hr1", tmp_path / "ro",
                                                              readonly=True)))
    dom = ET.fromstring(domain_xml(vm))
    assert dom.find("memoryBacking/access").get("mode") == "shared"
    fs = dom.findall("devices/filesystem")
    assert [f.find("target").get("dir") for f in fs] == ["hr0", "hr1"]
    assert fs[0].find("driver").get("type") == "virtiofs"
    assert fs[1].find("source").get("dir") == str(tmp_path / "ro")
    nine = ET.fromstring(domain_xml(replace(vm, shares=(Share("hr0", tmp_path, "9p", True),))))
    assert nine.find("devices/filesystem").get("accessmode") == "mapped"
    assert nine.find("devices/filesystem/readonly") is not None
    assert nine.find("memoryBacking/access") is None
    assert ET.fromstring(domain_xml(_vm())).find("devices/filesystem") is None


def test_run_refuses_bad_mounts_before_booting(tmp_path: Path) -> None:
    root = tmp_path / "store"
    for argv, words in ((["-v", "rel/dir:/d"], "relative"), (["-v", "/x:d"], "absolute"),
                        (["-v", "/x:/"], "'/'"), (["--mount", "type=bind,dst=/d"], "source"),
                        (["-v", "/x:/d", "-v", "/y:/d"], "duplicate"),
                        (["--tmpfs", "/t:size=huge"], "--tmpfs")):
        one_line_error(hyperrun(root, "run", *argv, "busybox", "true"), 125, words)


def test_volume_verbs(tmp_path: Path) -> None:
    root = tmp_path / "store"
    assert ok(hyperrun(root, "volume", "create", "data")) == "data\n"
    assert ok(hyperrun(root, "volume", "create", "data")) == "data\n"  # exists: as docker
    generated = ok(hyperrun(root, "volume", "create")).strip()
    assert len(generated) == 64
    assert ok(hyperrun(root, "volume", "ls")).splitlines() == [
        "DRIVER    VOLUME NAME", *(f"local     {n}" for n in sorted([generated, "data"]))]
    assert ok(hyperrun(root, "volume", "ls", "-q", "-f", "name=dat")) == "data\n"
    doc = json.loads(ok(hyperrun(root, "volume", "inspect", "data")))
    assert doc[0]["Name"] == "data" and doc[0]["Driver"] == "local"
    assert doc[0]["Mountpoint"] == str(root / "volumes" / "data" / "_data")
    assert doc[0]["CreatedAt"].endswith("Z") and doc[0]["Scope"] == "local"
    one_line_error(hyperrun(root, "volume", "inspect", "nope"), 1, "no such volume")
    one_line_error(hyperrun(root, "volume", "create", "a/b"), 125, "invalid volume name")
    one_line_error(hyperrun(root, "volume", "ls", "-f", "colour=red"), 125, "invalid filter")

    # In use by a container, running or not: refused; once it is gone, removed.
    c = make(root, "user", exit_status=0,
             mounts=(mounts.record(Mount(VOLUME, "/d", "data")),))
    one_line_error(hyperrun(root, "volume", "rm", "data"), 125, "volume is in use", c.id[:12])
    assert ok(hyperrun(root, "volume", "ls", "-q", "-f", "dangling=true")) == f"{generated}\n"
    ok(hyperrun(root, "rm", "user"))
    assert ok(hyperrun(root, "volume", "rm", "data")) == "data\n"
    one_line_error(hyperrun(root, "volume", "rm", "data"), 1, "no such volume")


def test_prune_and_rm_v_remove_anonymous_volumes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store(root)
    ok(hyperrun(root, "volume", "create", "named"))
    anon = [volumes.create(store, anonymous=True).name for _ in range(3)]
    (volumes.root(store) / anon[0] / "_data" / "f").write_bytes(b"x" * 10000)
    make(root, "keeps", exit_status=0, mounts=(mounts.record(Mount(VOLUME, "/a", anon[1],
                                                                   anonymous=True)),))
    make(root, "gone", exit_status=0, mounts=(mounts.record(Mount(VOLUME, "/a", anon[2],
                                                                  anonymous=True)),))
    one_line_error(hyperrun(root, "volume", "prune"), 125, "needs confirmation")
    out = ok(hyperrun(root, "volume", "prune", "-f"))
    assert out.startswith(f"Deleted Volumes:\n{anon[0]}\n\nTotal reclaimed space: ")
    ok(hyperrun(root, "rm", "-v", "gone"))
    assert {v.name for v in volumes.all_volumes(store)} == {"named", anon[1]}
    ok(hyperrun(root, "rm", "keeps"))  # without -v its anonymous volume stays
    assert ok(hyperrun(root, "volume", "prune", "-f", "-a")).startswith(
        "Deleted Volumes:\n" + "".join(sorted([f"{anon[1]}\n", "named\n"])))
    assert volumes.all_volumes(store) == []


def test_inspect_shows_mounts(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ok(hyperrun(root, "volume", "create", "v1"))
    make(root, "c", exit_status=0, mounts=tuple(map(mounts.record, (
        Mount(BIND, "/d", "/srv", readonly=True), Mount(VOLUME, "/v", "v1"),
        Mount(TMPFS, "/t")))))
    doc = json.loads(ok(hyperrun(root, "inspect", "c")))[0]
    assert doc["Mounts"] == [
        {"Type": "bind", "Source": "/srv", "Destination": "/d", "Mode": "ro", "RW": False,
         "Propagation": "rprivate"},
        {"Type": "volume", "Name": "v1", "Source": str(root / "volumes" / "v1" / "_data"),
         "Driver": "local", "Destination": "/v", "Mode": "z", "RW": True, "Propagation": ""}]
    assert doc["HostConfig"]["Binds"] == ["/srv:/d:ro", "v1:/v"]
    assert doc["HostConfig"]["Tmpfs"] == {"/t": "mode=1777"}


def test_read_only_views_refuse_writes_and_are_swept(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.ensure()
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("original")
    removed = tmp_path / "removed-since-run"
    given = (Mount(BIND, "/r", str(source), readonly=True), Mount(BIND, "/w", str(removed)))
    views = volumes.HostShares(store, "c" * 64, given)
    [(_, view)] = views.pairs
    with views:
        assert removed.is_dir()  # a bind source is created again at every start, as docker's
        assert (view / "f").read_text() == "original"
        with pytest.raises(OSError) as err:
            (view / "f").write_text("changed")
        assert err.value.errno == 30  # EROFS: the host refuses, whatever the guest does
        # A view whose owner process is gone (a killed command) is detached by the next one.
        stale = store.tmp / f"{volumes.VIEW_PREFIX}999999999-x-0"
        stale.mkdir()
        subprocess.run(["mount", "--bind", str(source), str(stale)], check=True)
        volumes._sweep(store)
        assert not stale.exists()
    assert not view.exists() and (source / "f").read_text() == "original"
