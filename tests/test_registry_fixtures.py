"""The loopback registries of tests/registry_fixtures.py do what the pull tests rely on."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
from helpers import ImageSpec, file, oci_layout_files, sha256, tar_bytes, write_dir, write_tar
from registry_fixtures import BadBlob, BadBlobServer, Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST, "application/vnd.oci.image.index.v1+json"])

IMAGE = ImageSpec(layers=[
    tar_bytes(file("etc/motd", "first layer\n"), file("srv/old.txt", "to be removed\n")),
    tar_bytes(file("srv/.wh.old.txt"), file("srv/new.txt", "second layer\n" * 500)),
], config={"Cmd": ["cat", "/srv/new.txt"]})


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = oci_layout_files([(IMAGE, "latest")],
                             nested={"amd64": IMAGE, "arm64": ImageSpec(IMAGE.layers,
                                                                        architecture="arm64")})
    return write_dir(files, tmp_path_factory.mktemp("layout"))


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True,
                          timeout=60)


def inspect_raw(reg: Registry, ref: str, *extra: str, creds: bool = True) -> dict:
    out = skopeo("inspect", "--raw", *reg.skopeo_args("", creds=creds), *extra,
                 f"docker://{reg.host}/{ref}")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def get(url: str, *, headers: dict[str, str] | None = None,
        context: ssl.SSLContext | None = None) -> tuple[int, Message, bytes]:
    """Status, headers (case-insensitive) and body of a GET."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


# ---- plain registry + recording proxy -------------------------------------------------------


def test_push_two_layer_image_and_pull_it_back(registry: Registry, layout: Path,
                                               tmp_path: Path) -> None:
    digest = registry.push(layout, "fixtures/two-layer:v1", layout_ref="latest")
    assert digest == sha256(IMAGE.manifest_bytes())  # pushed as is, not converted
    registry.clear_requests()

    manifest = inspect_raw(registry, "fixtures/two-layer:v1")
    assert manifest["mediaType"] == OCI_MANIFEST
    assert [layer["digest"] for layer in manifest["layers"]] == [sha256(b) for b in IMAGE.blobs()]

    out = skopeo("copy", *registry.skopeo_args("src"),
                 f"docker://{registry.host}/fixtures/two-layer:v1", f"oci:{tmp_path}/copy:v1")
    assert out.returncode == 0, out.stderr
    whiteout_layer = IMAGE.blobs()[1]
    assert (tmp_path / "copy/blobs/sha256" / sha256(whiteout_layer)[7:]).read_bytes() \
        == whiteout_layer
    for blob in IMAGE.blobs():
        assert registry.blob_gets(sha256(blob)) == 1
    assert ("GET", "/v2/fixtures/two-layer/manifests/v1", 200) in registry.requests()
    assert all(r.complete for r in registry.log())


def test_push_docker_schema2_and_index(registry: Registry, layout: Path, tmp_path: Path) -> None:
    archive = write_tar({p.relative_to(layout).as_posix(): p.read_bytes()
                         for p in layout.rglob("*") if p.is_file()}, tmp_path / "layout.tar")
    digest = registry.push(archive, "fixtures/docker:v1", docker=True, layout_ref="latest")
    manifest = inspect_raw(registry, "fixtures/docker:v1")
    assert manifest["mediaType"] == DOCKER_MANIFEST
    status, headers, body = get(f"{registry.url}/v2/fixtures/docker/manifests/v1",
                                headers={"Accept": ACCEPT})
    assert status == 200 and sha256(body) == digest == headers["Docker-Content-Digest"]

    index_digest = registry.push(layout, "fixtures/multi:v1", layout_ref="nested:latest")
    index = inspect_raw(registry, "fixtures/multi:v1")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    assert index_digest.startswith("sha256:")


def test_range_throttle_and_interrupt(registry: Registry, layout: Path) -> None:
    registry.push(layout, "fixtures/slow:v1", layout_ref="latest")
    blob = IMAGE.blobs()[1]
    url = f"{registry.url}/v2/fixtures/slow/blobs/{sha256(blob)}"
    registry.clear_requests()

    status, _, body = get(url, headers={"Range": "bytes=100-"})
    assert (status, body) == (206, blob[100:])
    assert registry.log()[-1].range == "bytes=100-"

    with registry.throttled(len(blob) * 4):  # about 0.25 s for the whole blob
        start = time.monotonic()
        assert get(url)[2] == blob
        assert time.monotonic() - start > 0.2

    registry.interrupt_blobs(100)
    with pytest.raises(http.client.IncompleteRead) as cut:
        urllib.request.urlopen(url, timeout=10).read()
    assert len(cut.value.partial) == 100
    assert registry.log()[-1].complete is False and registry.log()[-1].body_bytes == 100
    assert get(url)[2] == blob  # only the next GET was cut
    assert registry.blob_gets(sha256(blob)) == 4


def test_down_and_back(registry: Registry, down_host: str) -> None:
    with pytest.raises(urllib.error.URLError) as refused:
        get(f"http://{down_host}/v2/")
    assert isinstance(refused.value.reason, ConnectionRefusedError)
    with registry.down():
        with pytest.raises(urllib.error.URLError) as refused:
            get(f"{registry.url}/v2/")
        assert isinstance(refused.value.reason, ConnectionRefusedError)
    assert get(f"{registry.url}/v2/")[0] == 200


# ---- TLS + htpasswd ----------------------------------------------------------------------


def test_auth_registry_tls_and_basic_auth(auth_registry: Registry, layout: Path) -> None:
    reg = auth_registry
    assert reg.url.startswith("https://127.0.0.1:") and reg.ca_file and reg.ca_file.is_file()
    digest = reg.push(layout, "fixtures/private:v1", layout_ref="latest")
    assert inspect_raw(reg, "fixtures/private:v1")["layers"][1]["digest"] \
        == sha256(IMAGE.blobs()[1])

    ctx = ssl.create_default_context(cafile=str(reg.ca_file))
    status, headers, _ = get(f"{reg.url}/v2/", context=ctx)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")
    basic = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    status, headers, _ = get(f"{reg.url}/v2/fixtures/private/manifests/v1", context=ctx,
                             headers={"Authorization": f"Basic {basic}", "Accept": ACCEPT})
    assert (status, headers["Docker-Content-Digest"]) == (200, digest)
    with pytest.raises(urllib.error.URLError) as untrusted:  # not trusted without the CA
        get(f"{reg.url}/v2/")
    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)

    wrong = skopeo("inspect", "--raw", "--cert-dir", str(reg.cert_dir),
                   "--creds", f"{reg.username}:wrong", f"docker://{reg.host}/fixtures/private:v1")
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower()


# ---- bearer tokens -------------------------------------------------------------------------


def test_token_registry(token_registry: Registry, layout: Path) -> None:
    reg = token_registry
    reg.push(layout, "fixtures/tokens:v1", layout_ref="latest")
    pushes = [t for t in reg.token_requests()
              if t.scopes == ("repository:fixtures/tokens:pull,push",)]
    assert pushes and pushes[0].authenticated and pushes[0].granted == pushes[0].scopes
    reg.clear_requests()

    status, headers, _ = get(f"{reg.url}/v2/")
    assert status == 401 and 'Bearer realm="http://127.0.0.1:' in headers["WWW-Authenticate"]

    assert inspect_raw(reg, "fixtures/tokens:v1", creds=False)["mediaType"] == OCI_MANIFEST
    anonymous = reg.token_requests()[-1]
    assert anonymous.username is None and not anonymous.authenticated
    assert anonymous.scopes == ("repository:fixtures/tokens:pull",) == anonymous.granted
    assert any(r.authorization == "Bearer" and r.status == 200 for r in reg.log())

    reg.anonymous_pull = False
    try:
        denied = skopeo("inspect", "--raw", "--tls-verify=false",
                        f"docker://{reg.host}/fixtures/tokens:v1")
        assert denied.returncode != 0
        assert reg.token_requests()[-1].granted == ("repository:fixtures/tokens:",)
    finally:
        reg.anonymous_pull = True

    assert inspect_raw(reg, "fixtures/tokens:v1")["mediaType"] == OCI_MANIFEST
    wrong = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", f"{reg.username}:nope",
                   f"docker://{reg.host}/fixtures/tokens:v1")
    assert wrong.returncode != 0 and reg.token_requests()[-1].status == 401


# ---- bad blobs ---------------------------------------------------------------------------


def test_bad_blob_server(bad_blob_server: BadBlobServer) -> None:
    srv = bad_blob_server
    assert srv.ref == f"{srv.host}/bad/image:latest"
    base = f"http://{srv.host}/v2/bad/image"
    status, headers, manifest = get(f"{base}/manifests/latest", headers={"Accept": ACCEPT})
    assert status == 200 and sha256(manifest) == headers["Docker-Content-Digest"]
    layer = json.loads(manifest)["layers"][0]
    _, _, config = get(f"{base}/blobs/{json.loads(manifest)['config']['digest']}")
    assert sha256(config) == json.loads(manifest)["config"]["digest"]

    _, _, body = get(f"{base}/blobs/{layer['digest']}")
    assert len(body) == layer["size"] and sha256(body) != layer["digest"]

    def layer_of(variant: BadBlob) -> bytes:
        return get(f"http://{srv.host}/v2/bad/{variant}/blobs/{layer['digest']}")[2]

    assert sha256(layer_of(BadBlob.GOOD)) == layer["digest"]
    assert len(layer_of(BadBlob.SHORT)) < layer["size"] < len(layer_of(BadBlob.LONG))
    with pytest.raises(http.client.IncompleteRead):
        layer_of(BadBlob.CUT)
    assert skopeo("inspect", "--tls-verify=false", f"docker://{srv.ref}").returncode == 0
