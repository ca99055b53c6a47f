"""The registry transport (hyperrun/registry.py) against small real HTTP servers on loopback:
redirects to another host never carry credentials; 5xx answers are retried."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hyperrun.config import Config
from hyperrun.errors import RegistryError
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
