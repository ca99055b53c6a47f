"""`hyperrun pull` and `run --pull` against real registries on loopback (no mocked HTTP).

The registries come from tests/registry_fixtures.py: docker-registry behind a recording
proxy (plain, htpasswd + TLS, bearer tokens) and a tiny server whose layer is bad.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest
from helpers import ImageSpec, file, oci_layout_files, sha256, tar_bytes, write_dir
from registry_fixtures import BadBlob, BadBlobServer, Registry, Slow, SlowServer

from hyperrun.images.store import ImageStore
from hyperrun.store import Store

REPO = Path(__file__).resolve().parent.parent

BASE = tar_bytes(file("etc/motd", "first layer\n"), file("srv/old.txt", "to be removed\n"))
TOP = tar_bytes(file("srv/.wh.old.txt"), file("srv/new.txt", "second layer\n" * 500))
APP = ImageSpec([BASE, TOP], config={"Cmd": ["cat", "/srv/new.txt"]})
OTHER = ImageSpec([BASE, tar_bytes(file("srv/other.txt", "other image\n"))])
ARM = ImageSpec([BASE, TOP], architecture="arm64")
# Incompressible, so that a throttled download of it takes a while.
BIG = ImageSpec([tar_bytes(file("small.txt", "small\n")),
                 tar_bytes(file("big.bin", os.urandom(3 << 20)))])


def layer_digest(image: ImageSpec, i: int) -> str:
    return sha256(image.blobs()[i])


@dataclass(frozen=True)
class Pushed:
    app: str  # host/repo:tag of each image in `registry`
    app_digest: str
    docker: str
    multi: str
    other: str
    big: str


@pytest.fixture(scope="session")
def pushed(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    work = tmp_path_factory.mktemp("layouts")

    def layout(name: str, images: list[tuple[ImageSpec, str | None]],
               nested: dict[str, ImageSpec] | None = None) -> Path:
        return write_dir(oci_layout_files(images, nested), work / name)

    app = layout("app", [(APP, "latest")], nested={"amd64": APP, "arm64": ARM})
    digest = registry.push(app, "test/app:v1", layout_ref="latest")
    registry.push(app, "test/docker:v1", layout_ref="latest", docker=True)
    registry.push(app, "test/multi:latest", layout_ref="nested:latest")
    registry.push(layout("other", [(OTHER, "latest")]), "test/other:v1", layout_ref="latest")
    registry.push(layout("big", [(BIG, "latest")]), "test/big:v1", layout_ref="latest")
    h = registry.host
    return Pushed(f"{h}/test/app:v1", digest, f"{h}/test/docker:v1", f"{h}/test/multi:latest",
                  f"{h}/test/other:v1", f"{h}/test/big:v1")


@dataclass(frozen=True)
class Cli:
    """hyperrun's CLI with its own store, HOME and configuration."""

    root: Path
    home: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("XDG_CONFIG_HOME", "HYPERRUN_CONFIG", "DOCKER_CONFIG")}
        return {**env, "HYPERRUN_ROOT": str(self.root), "HOME": str(self.home),
                "PYTHONPATH": str(REPO)}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "hyperrun", *args]

    def __call__(self, *args: str, input: str | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), input=input, capture_output=True, text=True,
                              env=self.env, cwd=REPO, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env, cwd=REPO)

    @property
    def store(self) -> Store:
        return Store(self.root)

    @property
    def images(self) -> ImageStore:
        return ImageStore(self.store)

    def configure(self, text: str) -> None:
        path = self.home / ".config/hyperrun/config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def blobs(self) -> set[str]:
        blobs = self.store.blobs
        return {"sha256:" + p.name for p in blobs.iterdir()} if blobs.exists() else set()

    def partials(self) -> list[Path]:
        return list(self.store.tmp.glob("blob-*")) if self.store.tmp.exists() else []

    def locks(self) -> list[Path]:
        locks = self.store.tmp / "locks"
        return list(locks.iterdir()) if locks.exists() else []


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    (tmp_path / "home").mkdir()
    return Cli(tmp_path / "store", tmp_path / "home")


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr
    return proc


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 125 with one `hyperrun: ... (hint: ...)` line, no traceback."""
    assert proc.returncode == 125, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hyperrun: ")]
    assert len(errors) == 1 and "hint:" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


# ---- pulling -----------------------------------------------------------------------------


def test_pull_two_layers_with_whiteout(cli: Cli, pushed: Pushed, tmp_path: Path) -> None:
    out = ok(cli("pull", pushed.app)).stdout
    assert out.splitlines()[0] == "v1: Pulling from test/app"
    assert f"Digest: {pushed.app_digest}" in out
    assert f"Status: Downloaded newer image for {pushed.app}" in out
    assert out.splitlines()[-1] == pushed.app
    for i in range(2):
        assert f"{layer_digest(APP, i)[7:19]}: Pull complete" in out
    image = cli.images.get(pushed.app)
    assert image.id == APP.id and image.config.cmd == ("cat", "/srv/new.txt")
    assert cli.images.get(f"{pushed.app.rsplit(':', 1)[0]}@{pushed.app_digest}").id == APP.id
    root = tmp_path / "rootfs"
    cli.images.build_rootfs(image, root)
    assert sorted(p.name for p in (root / "srv").iterdir()) == ["new.txt"]
    assert (root / "etc/motd").read_text() == "first layer\n"
    assert cli.partials() == []
    # again: nothing new is downloaded
    again = ok(cli("pull", pushed.app)).stdout
    assert f"Status: Image is up to date for {pushed.app}" in again
    assert "Already exists" in again


def test_pull_docker_schema2(cli: Cli, pushed: Pushed) -> None:
    ok(cli("pull", "-q", pushed.docker))
    image = cli.images.get(pushed.docker)
    assert image.id == APP.id
    manifest = json.loads(cli.store.blob(image.manifest_digest).read_bytes())
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"


def test_pull_quiet_prints_only_the_reference(cli: Cli, pushed: Pushed) -> None:
    proc = ok(cli("pull", "-q", pushed.app))
    assert proc.stdout == pushed.app + "\n" and proc.stderr == ""


def test_pull_progress_on_a_terminal(cli: Cli, pushed: Pushed) -> None:
    """On a terminal: one live line per layer, ending as docker's do."""
    child = pexpect.spawn(cli.argv("pull", pushed.big)[0], cli.argv("pull", pushed.big)[1:],
                          env=cli.env, cwd=str(REPO), dimensions=(40, 120), timeout=60)
    child.expect(pexpect.EOF)
    child.close()
    screen = child.before.decode(errors="replace")
    assert child.exitstatus == 0, screen
    layers = len(cli.images.get(pushed.big).layers)
    assert screen.count("Pull complete") >= layers
    assert "\x1b[" in screen  # drawn live (cursor movement), not as plain log lines
    assert "Status: Downloaded newer image" in screen


def test_pull_progress_without_terminal_is_plain_lines(cli: Cli, pushed: Pushed) -> None:
    proc = ok(cli("pull", pushed.big))
    assert "\x1b[" not in proc.stdout
    assert "Pull complete" in proc.stdout


def test_pull_index_selects_platform(cli: Cli, pushed: Pushed) -> None:
    ok(cli("pull", pushed.multi))
    assert cli.images.get(pushed.multi).id == APP.id  # this host: amd64
    ok(cli("pull", "--platform", "linux/arm64", pushed.multi))
    image = cli.images.get(pushed.multi)
    assert image.id == ARM.id and image.architecture == "arm64"


def test_pull_index_without_the_platform_is_an_error(cli: Cli, pushed: Pushed) -> None:
    proc = cli("pull", "--platform", "linux/s390x", pushed.multi)
    one_line_error(proc, "no image for linux/s390x", "linux/amd64, linux/arm64")
    assert not cli.images.list()


def test_pull_by_digest(cli: Cli, pushed: Pushed, registry: Registry) -> None:
    ref = f"{registry.host}/test/app@{pushed.app_digest}"
    assert ok(cli("pull", ref)).stdout.splitlines()[-1] == ref
    assert cli.images.get(ref).id == APP.id
    # With both, the digest decides and the tag is ignored, as in docker.
    assert cli.images.get(f"{registry.host}/test/app:whatever@{pushed.app_digest}").id == APP.id


def test_manifest_not_found(cli: Cli, registry: Registry, pushed: Pushed) -> None:
    one_line_error(cli("pull", f"{registry.host}/test/app:nope"), "not found")
    one_line_error(cli("pull", f"{registry.host}/no/such:v1"), "not found")


@pytest.mark.parametrize("ref", ["Upper", "a:b:c", "x@sha256:123", "x@sha256"])
def test_bad_reference(cli: Cli, ref: str) -> None:
    one_line_error(cli("pull", ref), "invalid reference format")


def test_shared_layers_download_once(cli: Cli, pushed: Pushed, registry: Registry) -> None:
    ok(cli("pull", pushed.app))
    registry.clear_requests()
    out = ok(cli("pull", pushed.other)).stdout
    assert f"{layer_digest(OTHER, 0)[7:19]}: Already exists" in out
    assert registry.blob_gets(layer_digest(OTHER, 0)) == 0
    assert registry.blob_gets(layer_digest(OTHER, 1)) == 1
    assert layer_digest(OTHER, 0) == layer_digest(APP, 0)
    assert {i.id for i in cli.images.list()} == {APP.id, OTHER.id}


def test_concurrent_pulls_download_each_blob_once(cli: Cli, pushed: Pushed,
                                                  registry: Registry) -> None:
    registry.clear_requests()
    with registry.throttled(2 << 20):
        procs = [cli.popen("pull", pushed.big) for _ in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    for i in range(2):
        assert registry.blob_gets(layer_digest(BIG, i)) == 1
    assert cli.images.get(pushed.big).id == BIG.id
    assert cli.partials() == []


def test_killed_pull_resumes(cli: Cli, pushed: Pushed, registry: Registry) -> None:
    small, big = layer_digest(BIG, 0), layer_digest(BIG, 1)
    with registry.throttled(512 << 10):
        proc = cli.popen("pull", pushed.big)
        deadline = time.monotonic() + 60
        while small not in cli.blobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert small in cli.blobs() and big not in cli.blobs()
    assert not cli.images.list()
    registry.clear_requests()
    out = ok(cli("pull", pushed.big)).stdout
    assert f"{small[7:19]}: Already exists" in out
    assert registry.blob_gets(small) == 0 and registry.blob_gets(big) == 1
    assert cli.images.get(pushed.big).id == BIG.id
    assert cli.partials() == []  # the killed pull's leftovers were cleaned up


def test_cut_download_is_retried(cli: Cli, pushed: Pushed, registry: Registry) -> None:
    big = layer_digest(BIG, 1)
    registry.clear_requests()
    # Every blob GET takes one: the config's, the small layer's (both shorter than the cut)
    # and the big layer's, which is cut; its retry then runs to the end.
    registry.interrupt_blobs(1 << 20, times=3)
    try:
        ok(cli("pull", pushed.big))
    finally:
        registry.interrupt_blobs(None)
    assert registry.blob_gets(big) == 2
    assert cli.images.get(pushed.big).id == BIG.id


def test_killed_pull_leftovers_are_swept_by_the_next_pull(
        cli: Cli, slow_server: SlowServer, bad_blob_server: BadBlobServer) -> None:
    """A SIGKILLed download leaves its partial blob and lock file; the next pull, even of
    another image, removes them."""
    proc = cli.popen("pull", slow_server.ref_for(Slow.BLOB))
    try:
        deadline = time.monotonic() + 30
        while not cli.partials() and time.monotonic() < deadline:
            time.sleep(0.05)
        [partial] = cli.partials()
        assert partial.name.startswith(f"blob-{proc.pid}-{slow_server.layer_digest[7:]}.")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert len(cli.locks()) == 1
    ok(cli("pull", "-q", bad_blob_server.ref_for(BadBlob.GOOD)))
    assert cli.partials() == [] and cli.locks() == []


def test_lock_files_do_not_pile_up(cli: Cli, pushed: Pushed) -> None:
    for ref in (pushed.app, pushed.other, pushed.big):
        ok(cli("pull", "-q", ref))
    assert len(cli.blobs()) > 3 and cli.locks() == []


# ---- failures ----------------------------------------------------------------------------


def test_stalled_download_is_given_up(cli: Cli, slow_server: SlowServer) -> None:
    """A layer trickling a byte every 0.2 s ends in an error within seconds, not days."""
    cli.configure("pull:\n  stall_timeout: 1\n  min_speed: 10k\n")
    started = time.monotonic()
    proc = cli("pull", slow_server.ref_for(Slow.BLOB), timeout=40)
    line = one_line_error(proc, "download stalled", "less than 10240 bytes in 1 s")
    assert "pull.stall_timeout" in line
    assert time.monotonic() - started < 20  # three attempts with backoff
    assert cli.partials() == [] and slow_server.layer_digest not in cli.blobs()


def test_long_retry_after_fails_at_once(cli: Cli, slow_server: SlowServer) -> None:
    started = time.monotonic()
    proc = cli("pull", slow_server.ref_for(Slow.RETRY), timeout=40)
    one_line_error(proc, "answered 503 and asks to retry in 278 h", "retry_after_max (30 s)")
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(("text", "words"), [
    ("pull: {stall_timeout: 0}", "stall_timeout must be a number of seconds"),
    ("pull: {retry_after_max: forever}", "retry_after_max must be a number of seconds"),
    ("pull: {min_speed: fast}", "pull.min_speed must be bytes per second"),
    ("pull: {timeout: 3}", "unknown setting 'timeout'"),
    ("registries: {x: {token_realms: auth.example.com}}", "token_realms must be a list"),
])
def test_bad_pull_settings(cli: Cli, text: str, words: str) -> None:
    cli.configure(text)
    one_line_error(cli("pull", "x"), words)



def test_registry_down(cli: Cli, down_host: str) -> None:
    started = time.monotonic()
    one_line_error(cli("pull", f"{down_host}/test/app:v1"), "cannot reach registry",
                   down_host, "refused")
    assert time.monotonic() - started < 30
    assert not cli.blobs()


def test_registry_going_down(cli: Cli, pushed: Pushed, registry: Registry) -> None:
    with registry.down():
        one_line_error(cli("run", "--rm", pushed.app), "cannot reach registry")


@pytest.mark.parametrize(("variant", "words"), [
    (BadBlob.CORRUPT, "fails verification"),
    (BadBlob.SHORT, "truncated"),
    (BadBlob.LONG, "larger than"),
    (BadBlob.CUT, "interrupted"),
])
def test_bad_blob_is_rejected(cli: Cli, bad_blob_server: BadBlobServer, variant: BadBlob,
                              words: str) -> None:
    proc = cli("pull", bad_blob_server.ref_for(variant))
    one_line_error(proc, words)
    assert bad_blob_server.layer_digest not in cli.blobs()
    assert cli.partials() == []
    assert not cli.images.list()


def test_good_blob_from_the_same_server(cli: Cli, bad_blob_server: BadBlobServer) -> None:
    ok(cli("pull", bad_blob_server.ref_for(BadBlob.GOOD)))
    assert bad_blob_server.layer_digest in cli.blobs()


def test_odd_content_length_is_no_crash(cli: Cli, bad_blob_server: BadBlobServer) -> None:
    """`²`.isdigit() is true but int() refuses it: the length is ignored, the bytes checked."""
    ok(cli("pull", bad_blob_server.ref_for(BadBlob.ODD_LENGTH)))
    assert bad_blob_server.layer_digest in cli.blobs()


# ---- auth --------------------------------------------------------------------------------


def _push_to(reg: Registry, tmp_path: Path) -> str:
    layout = write_dir(oci_layout_files([(APP, "latest")]), tmp_path / "layout")
    reg.push(layout, "private/app:v1", layout_ref="latest")
    return f"{reg.host}/private/app:v1"


def test_htpasswd_tls_registry(cli: Cli, auth_registry: Registry, tmp_path: Path) -> None:
    reg = auth_registry
    ref = _push_to(reg, tmp_path)
    one_line_error(cli("pull", ref), "TLS", "failed")  # its CA is not trusted yet
    cli.configure(f"registries:\n  '{reg.host}':\n    ca: {reg.ca_file}\n")
    one_line_error(cli("pull", ref), "unauthorized", "requires authentication", "login")
    proc = cli("login", "-u", str(reg.username), "--password-stdin", reg.host, input="wrong\n")
    one_line_error(proc, "unauthorized", "incorrect username or password")
    assert not (cli.home / ".config/hyperrun/auth.json").exists()
    ok(cli("login", "-u", str(reg.username), "--password-stdin", reg.host,
           input=f"{reg.password}\n"))
    auth_file = cli.home / ".config/hyperrun/auth.json"
    assert auth_file.stat().st_mode & 0o777 == 0o600
    assert not (cli.home / ".docker").exists()
    reg.clear_requests()
    ok(cli("pull", ref))
    assert cli.images.get(ref).id == APP.id
    blob_requests = [r for r in reg.log() if "/blobs/" in r.path]
    assert blob_requests and all(r.authorization == "Basic" for r in blob_requests)
    assert "Removing login credentials" in ok(cli("logout", reg.host)).stdout
    assert "Not logged in" in ok(cli("logout", reg.host)).stdout
    one_line_error(cli("pull", ref), "unauthorized")


def test_docker_config_credentials(cli: Cli, auth_registry: Registry, tmp_path: Path) -> None:
    import base64

    reg = auth_registry
    ref = _push_to(reg, tmp_path)
    cli.configure(f"registries:\n  '{reg.host}':\n    ca: {reg.ca_file}\n")
    docker = cli.home / ".docker/config.json"
    docker.parent.mkdir()

    def write(password: str) -> None:
        auth = base64.b64encode(f"{reg.username}:{password}".encode()).decode()
        docker.write_text(json.dumps({"auths": {f"https://{reg.host}": {"auth": auth}}}))

    write("wrong")
    one_line_error(cli("pull", ref), "unauthorized", "incorrect username or password")
    write(str(reg.password))
    before = docker.read_bytes()
    ok(cli("pull", ref))
    assert docker.read_bytes() == before


def test_token_registry(cli: Cli, token_registry: Registry, tmp_path: Path) -> None:
    reg = token_registry
    ref = _push_to(reg, tmp_path)
    reg.clear_requests()
    ok(cli("pull", "-q", ref))  # anonymous token
    anonymous = reg.token_requests()
    assert anonymous and not anonymous[0].authenticated
    assert anonymous[0].scopes == ("repository:private/app:pull",)
    reg.anonymous_pull = False
    try:
        cli.images.remove(ref)
        one_line_error(cli("pull", ref), "unauthorized")
        proc = cli("login", "-u", str(reg.username), "--password-stdin", reg.host,
                   input="wrong\n")
        one_line_error(proc, "incorrect username or password")
        ok(cli("login", "-u", str(reg.username), "--password-stdin", reg.host,
               input=f"{reg.password}\n"))
        reg.clear_requests()
        ok(cli("pull", ref))
        tokens = reg.token_requests()
        assert len(tokens) == 1 and tokens[0].authenticated  # one token for the whole pull
        assert all(r.authorization == "Bearer" for r in reg.log() if r.status == 200)
    finally:
        reg.anonymous_pull = True


# ---- run --pull ----------------------------------------------------------------------------


def test_run_pull_never_does_not_pull(cli: Cli, pushed: Pushed, registry: Registry) -> None:
    registry.clear_requests()
    one_line_error(cli("run", "--rm", "--pull", "never", pushed.app), "image not found")
    assert registry.requests() == []


@pytest.mark.vm
def test_pull_and_run(vm, registry: Registry, tmp_path: Path) -> None:
    """`run` pulls a missing image (busybox + two layers with a whiteout) and runs it."""
    from conftest import _first_layer

    busybox = tmp_path / "busybox.tar"
    subprocess.run([sys.executable, str(REPO / "scripts/make-busybox-image"), str(busybox)],
                   check=True)
    image = ImageSpec([_first_layer(busybox), BASE, TOP], config={"Cmd": ["sh"]})
    layout = write_dir(oci_layout_files([(image, "latest")]), tmp_path / "layout")
    registry.push(layout, "test/vm:v1", layout_ref="latest")
    ref = f"{registry.host}/test/vm:v1"
    proc = vm.run(ref, "sh", "-c", "ls /srv; cat /etc/motd")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == "new.txt\nfirst layer\n"
    assert f"Unable to find image '{ref}' locally" in proc.stderr.decode()
    assert ImageStore(Store(vm.root)).get(ref).id == image.id


def test_docker_hub_mirror(cli: Cli, registry: Registry, tmp_path: Path) -> None:
    """docker.io references go to the configured mirror (here the loopback registry)."""
    layout = write_dir(oci_layout_files([(APP, "latest")]), tmp_path / "layout")
    registry.push(layout, "library/mirrored:v1", layout_ref="latest")
    cli.configure(f"registries:\n  docker.io:\n    mirrors: ['{registry.url}']\n")
    registry.clear_requests()
    ok(cli("pull", "-q", "mirrored:v1"))
    assert cli.images.get("docker.io/library/mirrored:v1").id == APP.id
    assert ("GET", "/v2/library/mirrored/manifests/v1", 200) in registry.requests()
