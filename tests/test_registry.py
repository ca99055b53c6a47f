"""The registry transport (hyperrun/registry/client.py) against small real HTTP servers on
loopback: redirects to another host never carry credentials; 5xx answers are retried, but
not after a long Retry-After; stalled answers are given up; credentials stay away from
token servers on other hosts; hostile bodies end in one-line errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from registry_fixtures import PASSWORD, USERNAME, Slow, SlowServer, Tls, TokenServer

from hyperrun.config import Config, PullConfig, RegistryConfig
from hyperrun.config import load as load_config
from hyperrun.errors import ManifestNotFound, RegistryError, RegistryUnreachable, Unauthorized
from hyperrun.registry.client import Challenge, Registry
from hyperrun.registry.credentials import Credentials


class Server:
    """A loopback HTTP server that records (path, Authorization) and answers via `reply`."""

    def __init__(self, reply) -> None:  # reply(handler) -> (status, headers, body)
        self.seen: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.seen.append((self.path, self.headers.get("Authorization")))
                status, headers, body = reply(self)
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def storage() -> Iterator[Server]:
    server = Server(lambda h: (200, {}, b"blob bytes"))
    yield server
    server.close()


def test_redirect_to_another_host_drops_credentials(storage: Server) -> None:
    def reply(h: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if h.headers.get("Authorization") is None:
            return 401, {"WWW-Authenticate": 'Basic realm="test"'}, b""
        if "/blobs/" in h.path:
            return 307, {"Location": f"http://{storage.host}/store/blob?sig=x"}, b""
        return 200, {}, b"{}"

    origin = Server(reply)
    try:
        with Registry(origin.host, Config(), Credentials("user", "pw")) as reg:
            with reg.blob("repo", "sha256:" + "0" * 64) as resp:
                assert resp.content == b"blob bytes"
        assert origin.seen[-1][1] is not None and origin.seen[-1][1].startswith("Basic ")
        assert storage.seen == [("/store/blob?sig=x", None)]
    finally:
        origin.close()


def test_server_errors_are_retried() -> None:
    answers = iter([503, 502, 200])

    server = Server(lambda h: (next(answers), {"Retry-After": "0"}, b"{}"))
    try:
        with Registry(server.host, Config()) as reg:
            body, _ = reg.manifest("repo", "v1", "application/json", 1 << 20)
        assert body == b"{}"
        assert len([p for p, _ in server.seen if "/manifests/" in p]) == 3
    finally:
        server.close()


def test_persistent_server_error_is_reported() -> None:
    server = Server(lambda h: (404 if "/manifests/" not in h.path else 500, {}, b"oops"))
    try:
        with Registry(server.host, Config()) as reg:
            reg_retry = reg.session.get_adapter("http://x").max_retries
            reg_retry.backoff_factor = 0  # type: ignore[attr-defined]
            with pytest.raises(RegistryError, match="answered 500"):
                reg.manifest("repo", "v1", "application/json", 1 << 20)
    finally:
        server.close()


def test_manifest_size_cap() -> None:
    server = Server(lambda h: (200, {}, b"x" * 5000))
    try:
        with Registry(server.host, Config()) as reg, pytest.raises(RegistryError, match="5000"):
            reg.manifest("repo", "v1", "application/json", 4096)
    finally:
        server.close()


def test_challenge_parse() -> None:
    c = Challenge.parse('Bearer realm="https://auth.example/token",service="registry",'
                        'scope="repository:a/b:pull"')
    assert c is not None and c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "registry",
                        "scope": "repository:a/b:pull"}


# ---- deadlines ---------------------------------------------------------------------------

FAST = Config(pull=PullConfig(retry_after_max=30, stall_timeout=1, min_speed=10 << 10))


def _no_backoff(reg: Registry) -> None:
    reg.session.get_adapter("http://x").max_retries.backoff_factor = 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", [Slow.HEAD, Slow.MANIFEST])
def test_trickled_manifest_is_given_up(slow_server: SlowServer, mode: Slow) -> None:
    """A byte every 0.2 s keeps every read within its timeout; the deadline still ends it."""
    started = time.monotonic()
    with Registry(slow_server.host, FAST) as reg, \
            pytest.raises(RegistryUnreachable, match="no complete answer within 1 s") as err:
        _no_backoff(reg)
        reg.manifest(f"slow/{mode}", "latest", "application/json", 1 << 20)
    assert "pull.stall_timeout" in (err.value.hint or "")
    assert time.monotonic() - started < 10  # three tries (urllib3 retries a broken read)


def test_trickled_answer_over_tls_is_given_up(tmp_path: Path) -> None:
    """The deadline cuts a TLS connection as well (it shuts the socket under the TLS layer)."""
    tls = Tls.make(tmp_path / "tls")
    server = SlowServer(tls=tls.server_context())
    config = Config(registries={server.host: RegistryConfig(ca=tls.ca_file)},
                    pull=FAST.pull)
    try:
        started = time.monotonic()
        with Registry(server.host, config) as reg, \
                pytest.raises(RegistryUnreachable, match="no complete answer within 1 s"):
            _no_backoff(reg)
            reg.manifest("slow/manifest", "latest", "application/json", 1 << 20)
        assert time.monotonic() - started < 5
        with Registry(server.host, config) as reg:  # the same server, answering at once
            body, _ = reg.manifest("slow/good", "latest", "application/json", 1 << 20)
        assert body == server.manifest
    finally:
        server.close()


def test_trickled_blob_is_given_up(slow_server: SlowServer) -> None:
    started = time.monotonic()
    with Registry(slow_server.host, FAST) as reg, \
            reg.blob("slow/blob", slow_server.layer_digest) as resp, \
            pytest.raises(RegistryUnreachable, match="download stalled") as err:
        for _ in reg.iter_blob(resp, "layer"):
            pass
    assert "less than 10240 bytes in 1 s" in err.value.message
    assert time.monotonic() - started < 5


def test_slow_but_steady_blob_is_fine(slow_server: SlowServer) -> None:
    """80 KB/s for over a second: above min_speed, so the windows keep being extended."""
    with Registry(slow_server.host, FAST) as reg, \
            reg.blob("slow/steady", slow_server.layer_digest) as resp:
        assert b"".join(reg.iter_blob(resp, "layer")) == slow_server.layer


def test_long_retry_after_is_not_waited_for(slow_server: SlowServer) -> None:
    started = time.monotonic()
    with Registry(slow_server.host, FAST) as reg, \
            pytest.raises(RegistryError, match="answered 503 and asks to retry in 278 h") as err:
        reg.manifest("slow/retry", "latest", "application/json", 1 << 20)
    assert "pull.retry_after_max (30 s)" in (err.value.hint or "")
    assert time.monotonic() - started < 5
    assert slow_server.requests.count(("GET", "/v2/slow/retry/manifests/latest")) == 1


def test_huge_retry_after_is_an_error_not_a_crash(slow_server: SlowServer) -> None:
    """int() of 5000 digits raises ValueError in Python 3.11; urllib3 would let it through."""
    with Registry(slow_server.host, FAST) as reg, \
            pytest.raises(RegistryError, match="asks to retry in more than 30 years"):
        reg.manifest("slow/hugeretry", "latest", "application/json", 1 << 20)


def test_short_retry_after_is_honoured() -> None:
    answers = iter([503, 200])
    server = Server(lambda h: (next(answers), {"Retry-After": "1"}, b"{}"))
    try:
        started = time.monotonic()
        with Registry(server.host, FAST) as reg:
            body, _ = reg.manifest("repo", "v1", "application/json", 1 << 20)
        assert body == b"{}" and time.monotonic() - started >= 1
    finally:
        server.close()


# ---- hostile answers ---------------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


def _bearer_registry(realm: str) -> Server:
    """A registry that wants a bearer token from realm and accepts any."""
    def reply(h: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if (h.headers.get("Authorization") or "").startswith("Bearer "):
            return 200, {}, b"{}"
        return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="test"'}, b""
    return Server(reply)


def test_deeply_nested_token_answer() -> None:
    tokens = Server(lambda h: (200, {"Content-Type": "application/json"}, DEEP))
    origin = _bearer_registry(f"http://{tokens.host}/token")
    try:
        with Registry(origin.host, Config()) as reg, \
                pytest.raises(RegistryError, match="sent no usable token"):
            reg.manifest("repo", "v1", "application/json", 1 << 20)
    finally:
        origin.close()
        tokens.close()


@pytest.mark.parametrize("body", [
    DEEP,
    json.dumps({"errors": [{"code": 7, "message": ["x"]}]}).encode(),
])
def test_odd_error_bodies(body: bytes) -> None:
    server = Server(lambda h: (404, {"Content-Type": "application/json"}, body))
    try:
        with Registry(server.host, Config()) as reg, \
                pytest.raises(ManifestNotFound, match="not found"):
            reg.manifest("repo", "v1", "application/json", 1 << 20)
    finally:
        server.close()


def test_registry_text_in_errors_is_bounded() -> None:
    body = json.dumps({"errors": [{"code": "DENIED", "message": "\x1b[2J" + "A" * 10_000}]})
    server = Server(lambda h: (403, {}, body.encode()))
    try:
        with Registry(server.host, Config()) as reg, \
                pytest.raises(RegistryError, match="access denied: denied: \x1b") as err:
            reg.manifest("repo", "v1", "application/json", 1 << 20)
        assert len(err.value.message) < 300
    finally:
        server.close()


def test_huge_content_length_is_refused_cleanly() -> None:
    # http.client ignores a Content-Length it cannot parse; ours must not crash on it either
    server = Server(lambda h: (200, {"Content-Length": "9" * 5000}, b""))
    try:
        with Registry(server.host, Config()) as reg:
            body, _ = reg.manifest("repo", "v1", "application/json", 1 << 20)
        assert body == b""
    finally:
        server.close()


# ---- token realms ------------------------------------------------------------------------


@pytest.fixture
def foreign_tokens(tmp_path: Path) -> Iterator[TokenServer]:
    """A token server on another loopback address than the registries here (127.0.0.1)."""
    server = TokenServer(tmp_path / "tokens", address="127.0.0.2")
    yield server
    server.close()


def test_credentials_not_sent_to_a_foreign_realm(foreign_tokens: TokenServer) -> None:
    origin = _bearer_registry(foreign_tokens.url)
    try:
        creds = Credentials(USERNAME, PASSWORD)
        with Registry(origin.host, Config(), creds) as reg, \
                pytest.raises(Unauthorized, match="refusing to send the credentials") as err:
            reg.manifest("repo", "v1", "application/json", 1 << 20)
        assert f"registries.{origin.host}.token_realms" in (err.value.hint or "")
        assert foreign_tokens.requests() == []
        # anonymous: fine, that is how Docker Hub's auth.docker.io works
        with Registry(origin.host, Config()) as reg:
            reg.manifest("repo", "v1", "application/json", 1 << 20)
        assert [r.username for r in foreign_tokens.requests()] == [None]
        # a configured realm gets them
        allowed = Config(registries={origin.host: RegistryConfig(token_realms=("127.0.0.2",))})
        with Registry(origin.host, allowed, creds) as reg:
            reg.manifest("repo", "v1", "application/json", 1 << 20)
        assert foreign_tokens.requests()[-1].authenticated
    finally:
        origin.close()


def test_plain_http_realm_of_an_https_registry(tmp_path: Path) -> None:
    tls = Tls.make(tmp_path / "tls")
    origin = _bearer_registry("http://auth.example.invalid/token")
    origin.httpd.socket = tls.server_context().wrap_socket(origin.httpd.socket,
                                                           server_side=True)
    try:
        config = Config(registries={origin.host: RegistryConfig(ca=tls.ca_file)})
        for creds in (None, Credentials(USERNAME, PASSWORD)):
            with Registry(origin.host, config, creds) as reg, \
                    pytest.raises(Unauthorized, match="plain-HTTP token server") as err:
                reg.manifest("repo", "v1", "application/json", 1 << 20)
            assert "insecure" in (err.value.hint or "")
    finally:
        origin.close()


@pytest.mark.parametrize("headers", [
    {"WWW-Authenticate": 'Bearer realm="http://[::1/token",service="x"'},
    {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:99999999/token",service="x"'},
])
def test_unparsable_token_realm(headers: dict[str, str]) -> None:
    """urllib raises ValueError on a bad IPv6 address or port; that is no internal error."""
    server = Server(lambda h: (401, headers, b""))
    try:
        with Registry(server.host, Config()) as reg, \
                pytest.raises(Unauthorized, match="no usable token realm"):
            reg.manifest("repo", "v1", "application/json", 1 << 20)
    finally:
        server.close()


def test_unparsable_redirect() -> None:
    server = Server(lambda h: (307, {"Location": "http://[::1/blob"}, b""))
    try:
        with Registry(server.host, Config()) as reg, \
                pytest.raises(RegistryError, match="failed: Invalid IPv6 URL"):
            reg.blob("repo", "sha256:" + "0" * 64)
    finally:
        server.close()


def test_pull_settings_from_config_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("pull:\n  retry_after_max: 5\n  stall_timeout: 2.5\n  min_speed: 100k\n"
                    "registries:\n  reg.example.com:\n    token_realms: [Auth.Example.com]\n")
    cfg = load_config(path)
    assert cfg.pull == PullConfig(retry_after_max=5, stall_timeout=2.5, min_speed=100 << 10)
    assert cfg.registry("reg.example.com").token_realms == ("auth.example.com",)
    assert Config().pull == PullConfig(30, 60, 1024)


def test_docker_hub_is_reached_at_its_api_host() -> None:
    """`docker.io/...` references talk to registry-1.docker.io, as docker does."""
    with Registry("docker.io", Config()) as hub:
        assert hub.base == "https://registry-1.docker.io"  # nothing is sent to learn this
    with Registry("docker.io", Config(), endpoint="https://mirror.example/") as mirrored:
        assert mirrored.base == "https://mirror.example"
