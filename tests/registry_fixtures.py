"""Loopback OCI registries for the pull tests and scripts/bench-pull.

Everything here listens on 127.0.0.1 only. `start_registry()` runs Debian's
`docker-registry` (CNCF distribution 2.8) behind a recording proxy; it works outside
pytest too (scripts/bench-pull uses it). The pytest fixtures at the bottom are exported
with `from registry_fixtures import *` in tests/conftest.py:

    registry         plain HTTP, no auth                               (session)
    auth_registry    HTTPS with a test CA, htpasswd basic auth         (session)
    token_registry   plain HTTP, bearer tokens from a test token server (session)
    bad_blob_server  serves bad/image:latest whose layer fails its digest (function)
    slow_server      serves slow/<mode>:latest, trickling or asking to come back later (function)
    down_host        "127.0.0.1:PORT" with nothing listening           (function)
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import dataclasses
import http.client
import json
import os
import re
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import ImageSpec, dump, file, sha256, tar_bytes

__all__ = [
    "auth_registry", "bad_blob_server", "down_host", "registry", "slow_server",
    "token_registry", "Auth", "BadBlobServer", "BadBlob", "Recorded", "Registry", "Slow",
    "SlowServer", "TokenRequest", "TokenServer", "free_port", "start_registry",
]

LOOPBACK = "127.0.0.1"
USERNAME = "hyperrun"
PASSWORD = "s3cret-pass"
# bcrypt (cost 4, the minimum: cheap to check) of PASSWORD, made once with
# crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)), so the tests need
# neither the bcrypt package nor apache2-utils.
PASSWORD_BCRYPT = "$2b$04$OjxsAdxtaESCjtQNxfnevuHOQCSBxNNXej2b0/kVEwCUEaGFzS0Tm"
TOKEN_SERVICE = "hyperrun-test-registry"
TOKEN_ISSUER = "hyperrun-test-token-issuer"
BLOB_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
# Hop-by-hop headers (RFC 9110 7.6.1): each side of the proxy sets its own.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade"}
CHUNK = 64 * 1024


class Auth(StrEnum):
    NONE = "none"
    HTPASSWD = "htpasswd"
    TOKEN = "token"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: a registry must not outlive a pytest that was killed.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _run(argv: Sequence[str | Path], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(argv, capture_output=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(map(str, argv))} failed ({proc.returncode}):\n"
                           f"{proc.stderr.decode(errors='replace')}")
    return proc


def _path_only(path: str) -> str:
    return urllib.parse.urlsplit(path).path


# ---- TLS material --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    """A test CA and a server certificate for 127.0.0.1 and localhost signed by it."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    cert_dir: Path  # for skopeo --cert-dir / containers' certs.d: holds only ca.crt

    @classmethod
    def make(cls, work: Path) -> Tls:
        work.mkdir(parents=True, exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        ca, ca_key = work / "ca.pem", work / "ca.key"
        _run(["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "3650",
              "-subj", "/CN=hyperrun test CA",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        key, csr, cert = work / "server.key", work / "server.csr", work / "server.pem"
        _run(["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"])
        ext = work / "server.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                       "basicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth\n"
                       "subjectKeyIdentifier=hash\n"
                       "authorityKeyIdentifier=keyid,issuer\n")
        _run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
              "-CAcreateserial", "-out", cert, "-days", "3650", "-extfile", ext])
        cert_dir = work / "certs.d"
        cert_dir.mkdir(exist_ok=True)
        (cert_dir / "ca.crt").write_bytes(ca.read_bytes())
        return cls(ca, cert, key, cert_dir)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


# ---- recording proxy -----------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One request the proxy forwarded, and how much of the response body went back."""

    method: str
    path: str
    status: int
    range: str | None = None
    authorization: str | None = None  # scheme only: "Basic" or "Bearer"
    body_bytes: int = 0
    complete: bool = True  # False: the body was cut short (interrupt, or the client left)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: RecordingProxy, port: int) -> None:
        self.proxy = proxy
        self.active: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__((LOOPBACK, port), _ProxyHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gives up (bad certificate, killed pull) is no proxy error

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        if self.proxy.server_tls is not None:
            # Handshake in the handler thread, so one slow client cannot stall accept().
            sock = self.proxy.server_tls.wrap_socket(sock, server_side=True,
                                                     do_handshake_on_connect=False)
        return sock, addr


class _Cut(Exception):
    """The proxy cut a response body short on purpose."""


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer
    upstream: http.client.HTTPConnection | None = None
    _sent = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(30)
            self.request.do_handshake()
        super().setup()
        with self.server.lock:
            self.server.active.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.active.discard(self.connection)
        if self.upstream is not None:
            self.upstream.close()
        with contextlib.suppress(OSError):
            super().finish()

    def handle_one_request(self) -> None:
        with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError):
            super().handle_one_request()
            return
        self.close_connection = True

    def do_GET(self) -> None:
        self._forward()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _connect(self) -> http.client.HTTPConnection:
        proxy = self.server.proxy
        if self.upstream is None:
            if proxy.upstream_tls is not None:
                self.upstream = http.client.HTTPSConnection(proxy.upstream, timeout=60,
                                                            context=proxy.upstream_tls)
            else:
                self.upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
        return self.upstream

    def _send_request_body(self, conn: http.client.HTTPConnection) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    conn.send(b"0\r\n\r\n")
                    return
                data = self.rfile.read(size)
                self.rfile.readline()
                conn.send(b"%x\r\n%s\r\n" % (len(data), data))
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            data = self.rfile.read(min(CHUNK, remaining))
            if not data:
                raise ConnectionError("client closed the request body early")
            conn.send(data)
            remaining -= len(data)

    def _forward(self) -> None:
        proxy = self.server.proxy
        conn = self._connect()
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            self._send_request_body(conn)
            resp = conn.getresponse()
        except OSError:
            conn.close()
            self.upstream = None
            self.close_connection = True
            proxy._record(self, 502, 0)
            with contextlib.suppress(OSError):
                self.send_error(502, "upstream registry unreachable")
            return

        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        body: bytes | None = None
        if not no_body and length is None:
            body = resp.read()  # chunked or close-delimited: pass it on with a length
            headers.append(("Content-Length", str(len(body))))
        # Record before answering: a client that has its answer must find it in the log.
        announced = 0 if no_body else len(body) if body is not None else int(length or 0)
        entry = proxy._record(self, resp.status, announced)
        self.send_response_only(resp.status, resp.reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if resp.getheader("Connection", "").lower() == "close" or resp.will_close:
            self.upstream = None  # http.client reconnects a closed connection lazily

        self._sent = 0
        try:
            if body is not None:
                self.wfile.write(body)
            elif not no_body and length is not None:
                self._stream(resp, int(length))
        except (_Cut, OSError):
            proxy._cut_short(entry, self._sent)  # before closing, for the same reason
            self.close_connection = True
            conn.close()
            self.upstream = None
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def _stream(self, resp: http.client.HTTPResponse, length: int) -> None:
        """Copy length bytes of body, throttled or cut as the proxy says; count in _sent."""
        proxy = self.server.proxy
        is_blob = self.command == "GET" and BLOB_PATH.match(_path_only(self.path)) is not None
        cut = proxy._take_interrupt() if is_blob and resp.status in (200, 206) else None
        sent = 0
        while sent < length:
            rate = proxy.rate if is_blob else None
            n = min(CHUNK, length - sent, max(1, rate // 20) if rate else CHUNK)
            data = resp.read(n)
            if not data:
                raise ConnectionError("upstream closed the body early")
            if cut is not None and sent + len(data) >= cut:
                self.wfile.write(data[:cut - sent])
                self.wfile.flush()
                self._sent = cut
                raise _Cut()
            self.wfile.write(data)
            sent += len(data)
            self._sent = sent
            if rate:
                time.sleep(len(data) / rate)


class RecordingProxy:
    """HTTP(S) proxy on 127.0.0.1 that forwards to one upstream and records each request.

    Blob GETs can be slowed down (`rate`, bytes per second) or cut after some bytes
    (`interrupt_blobs`), for tests of interrupted and resumed downloads.
    """

    def __init__(self, upstream: str, port: int, *, upstream_tls: ssl.SSLContext | None = None,
                 server_tls: ssl.SSLContext | None = None) -> None:
        self.upstream, self.port = upstream, port
        self.upstream_tls, self.server_tls = upstream_tls, server_tls
        self.rate: int | None = None
        self._interrupts: list[int] = []
        self._log: list[Recorded] = []
        self._lock = threading.Lock()
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self._server = _ProxyServer(self, self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True,
                                        name=f"registry-proxy-{self.port}")
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and drop every open client connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.lock:
            for sock in list(server.active):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def _record(self, handler: _ProxyHandler, status: int, body_bytes: int) -> int:
        auth = handler.headers.get("Authorization")
        with self._lock:
            self._log.append(Recorded(handler.command, handler.path, status,
                                      handler.headers.get("Range"),
                                      auth.split()[0] if auth else None, body_bytes))
            return len(self._log) - 1

    def _cut_short(self, entry: int, sent: int) -> None:
        with self._lock:
            if entry < len(self._log):  # not cleared meanwhile
                self._log[entry] = dataclasses.replace(self._log[entry], body_bytes=sent,
                                                       complete=False)

    def _take_interrupt(self) -> int | None:
        with self._lock:
            return self._interrupts.pop(0) if self._interrupts else None

    def log(self) -> list[Recorded]:
        with self._lock:
            return list(self._log)

    def clear(self) -> None:
        with self._lock:
            self._log.clear()

    def interrupt_blobs(self, after_bytes: int | None, times: int = 1) -> None:
        with self._lock:
            self._interrupts = [] if after_bytes is None else [after_bytes] * times


# ---- token server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRequest:
    """What the token server was asked and what it answered."""

    service: str | None
    scopes: tuple[str, ...]
    username: str | None  # from Basic credentials; None when anonymous
    authenticated: bool  # credentials given and right
    granted: tuple[str, ...]  # "repository:NAME:ACTION,..." actually put in the token
    status: int


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Docker token-auth server (distribution's docs/spec/auth/token.md) on 127.0.0.1.

    One user (USERNAME/PASSWORD) may pull and push anywhere; anonymous callers get pull
    only while `anonymous_pull` is set. JWTs are RS256, signed by openssl with a
    self-signed key whose certificate travels in the `x5c` header and is the registry's
    rootcertbundle.
    """

    def __init__(self, work: Path, username: str = USERNAME, password: str = PASSWORD,
                 address: str = LOOPBACK) -> None:
        self.username, self.password = username, password
        self.anonymous_pull = True
        self.expires_in = 300
        work.mkdir(parents=True, exist_ok=True)
        self.key_file, self.cert_file = work / "token-signer.key", work / "token-signer.pem"
        _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
              "-keyout", self.key_file, "-out", self.cert_file, "-days", "3650",
              "-subj", "/CN=hyperrun test token signer"])
        self._x5c = base64.b64encode(
            ssl.PEM_cert_to_DER_cert(self.cert_file.read_text())).decode()
        self._requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((address, 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{address}:{self.port}/token"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = f"{_b64url(dump(header))}.{_b64url(dump(claims))}"
        signature = _run(["openssl", "dgst", "-sha256", "-sign", str(self.key_file)],
                         input=signing_input.encode()).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def _grant(self, scope: str, authenticated: bool) -> dict[str, Any] | None:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if not kind or not name:
            return None
        wanted = [a for a in actions.split(",") if a]
        if authenticated:
            allowed = wanted
        elif self.anonymous_pull and kind == "repository":
            allowed = [a for a in wanted if a == "pull"]
        else:
            allowed = []
        return {"type": kind, "name": name, "actions": allowed}

    def _answer(self, query: dict[str, list[str]], authorization: str | None
                ) -> tuple[int, dict[str, Any], TokenRequest]:
        service = query["service"][0] if query.get("service") else None
        scopes = tuple(dict.fromkeys(  # containers/image may ask for one scope twice
            s for value in query.get("scope", []) for s in value.split(" ") if s))
        username, authenticated = None, False
        if authorization and authorization.lower().startswith("basic "):
            try:
                user, _, pw = base64.b64decode(authorization[6:]).decode().partition(":")
            except ValueError:
                user, pw = "", None
            username = user
            if user != self.username or pw != self.password:
                return 401, {"errors": [{"code": "UNAUTHORIZED",
                                         "message": "wrong username or password"}]}, \
                    TokenRequest(service, scopes, username, False, (), 401)
            authenticated = True
        access = [g for s in scopes if (g := self._grant(s, authenticated)) is not None]
        now = int(time.time())
        token = self.sign({
            "iss": TOKEN_ISSUER, "sub": username or "", "aud": service or TOKEN_SERVICE,
            "exp": now + self.expires_in, "nbf": now - 10, "iat": now,
            "jti": secrets.token_hex(8), "access": access,
        })
        granted = tuple(f"{g['type']}:{g['name']}:{','.join(g['actions'])}" for g in access)
        body = {"token": token, "access_token": token, "expires_in": self.expires_in,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
        return 200, body, TokenRequest(service, scopes, username, authenticated, granted, 200)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/token":
                    self.send_error(404)
                    return
                status, body, record = server._answer(urllib.parse.parse_qs(url.query),
                                                      self.headers.get("Authorization"))
                with server._lock:
                    server._requests.append(record)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


# ---- the registry -------------------------------------------------------------------------


@dataclass
class Registry:
    """A docker-registry process on 127.0.0.1 behind a RecordingProxy.

    Clients use `host` (the proxy); `push()` goes straight to the registry
    (`registry_host`) so that the proxy log holds only what the code under test did.
    """

    work: Path
    auth: Auth = Auth.NONE
    tls: Tls | None = None
    token_server: TokenServer | None = None
    username: str | None = None
    password: str | None = None
    registry_port: int = field(default_factory=free_port)
    proxy_port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _proxy: RecordingProxy | None = field(default=None, repr=False)

    # -- addresses and client settings

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.proxy_port}"

    @property
    def registry_host(self) -> str:
        return f"{LOOPBACK}:{self.registry_port}"

    @property
    def url(self) -> str:
        return ("https://" if self.tls else "http://") + self.host

    @property
    def ca_file(self) -> Path | None:
        return self.tls.ca_file if self.tls else None

    @property
    def cert_dir(self) -> Path | None:
        return self.tls.cert_dir if self.tls else None

    @property
    def log_file(self) -> Path:
        return self.work / "registry.log"

    def skopeo_args(self, role: str = "src", *, creds: bool = True) -> list[str]:
        """skopeo flags to reach this registry; role is "src", "dest" or "" (inspect)."""
        prefix = f"--{role}-" if role else "--"
        args = [f"{prefix}cert-dir", str(self.cert_dir)] if self.tls else [
            f"{prefix}tls-verify=false"]
        if creds and self.username is not None:
            args += [f"{prefix}creds", f"{self.username}:{self.password}"]
        return args

    # -- lifetime

    def _config(self) -> dict[str, Any]:
        http_cfg: dict[str, Any] = {
            "addr": self.registry_host, "secret": "hyperrun-test-secret",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if self.tls:
            http_cfg["tls"] = {"certificate": str(self.tls.cert_file),
                               "key": str(self.tls.key_file)}
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.work / "storage")},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http_cfg,
        }
        if self.auth is Auth.HTPASSWD:
            htpasswd = self.work / "htpasswd"
            htpasswd.write_text(f"{self.username}:{PASSWORD_BCRYPT}\n")
            config["auth"] = {"htpasswd": {"realm": "hyperrun-test", "path": str(htpasswd)}}
        elif self.auth is Auth.TOKEN:
            assert self.token_server is not None
            config["auth"] = {"token": {
                "realm": self.token_server.url, "service": TOKEN_SERVICE,
                "issuer": TOKEN_ISSUER, "rootcertbundle": str(self.token_server.cert_file),
            }}
        return config

    def start(self) -> None:
        """Start the registry and its proxy (again, on the same ports after stop())."""
        if self._proc is not None:
            return
        config = self.work / "config.yml"
        config.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                ["docker-registry", "serve", str(config)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, env=env, preexec_fn=_die_with_parent)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        ctx = self.tls.client_context() if self.tls else None
        self._proxy = self._proxy or RecordingProxy(
            self.registry_host, self.proxy_port, upstream_tls=ctx,
            server_tls=self.tls.server_context() if self.tls else None)
        self._proxy.start()

    def _wait_ready(self, timeout: float = 20) -> None:
        assert self._proc is not None
        url = ("https://" if self.tls else "http://") + self.registry_host + "/v2/"
        ctx = self.tls.client_context() if self.tls else None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited ({self._proc.returncode}):\n"
                                   + self.log_file.read_text()[-3000:])
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not answer on {url}:\n"
                                   + self.log_file.read_text()[-3000:])
            time.sleep(0.05)

    def stop(self) -> None:
        """Take the registry and its proxy down: clients then get "connection refused"."""
        if self._proxy is not None:
            self._proxy.stop()
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The registry is unreachable inside the block and back after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def close(self) -> None:
        self.stop()
        if self.token_server is not None:
            self.token_server.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- content

    def push(self, src: Path | str, ref: str, *, docker: bool = False,
             layout_ref: str | None = None) -> str:
        """Push an OCI layout (directory or tar) to REF ("name:tag") and return the digest of
        the manifest pushed (an index's, for an index). docker=True converts the image to
        Docker schema 2. A str src is passed to skopeo as it is ("docker-archive:...")."""
        if isinstance(src, Path):
            transport = "oci" if src.is_dir() else "oci-archive"
            src = f"{transport}:{src}" + (f":{layout_ref}" if layout_ref else "")
        digestfile = self.work / f"digest-{secrets.token_hex(4)}"
        argv: list[str | Path] = [
            "skopeo", "--insecure-policy", "copy", "--retry-times", "0", "--all",
            "--digestfile", digestfile, *self.skopeo_args("dest")]
        if docker:
            argv += ["--format", "v2s2"]
        argv += [src, f"docker://{self.registry_host}/{ref}"]
        _run(argv, timeout=300)
        digest = digestfile.read_text().strip()
        digestfile.unlink()
        return digest

    # -- what the proxy saw

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of each request through the proxy, oldest first."""
        return [(r.method, r.path, r.status) for r in self.log()]

    def log(self) -> list[Recorded]:
        return self._proxy.log() if self._proxy else []

    def clear_requests(self) -> None:
        if self._proxy:
            self._proxy.clear()
        if self.token_server:
            self.token_server.clear()

    def blob_gets(self, digest: str) -> int:
        """How many GETs of blob digest (any repository) went through the proxy."""
        return sum(1 for r in self.log() if r.method == "GET"
                   and (m := BLOB_PATH.match(_path_only(r.path))) and m["digest"] == digest)

    def throttle(self, bytes_per_second: int | None) -> None:
        """Slow blob GET bodies to this rate (None: full speed). Takes effect at once,
        also for downloads in flight."""
        assert self._proxy is not None
        self._proxy.rate = bytes_per_second

    @contextlib.contextmanager
    def throttled(self, bytes_per_second: int) -> Iterator[None]:
        self.throttle(bytes_per_second)
        try:
            yield
        finally:
            self.throttle(None)

    def interrupt_blobs(self, after_bytes: int | None, times: int = 1) -> None:
        """Cut the next `times` blob GET bodies after after_bytes bytes (the full
        Content-Length is announced, then the connection is closed). None: stop cutting."""
        assert self._proxy is not None
        self._proxy.interrupt_blobs(after_bytes, times)

    # -- token auth

    @property
    def anonymous_pull(self) -> bool:
        assert self.token_server is not None
        return self.token_server.anonymous_pull

    @anonymous_pull.setter
    def anonymous_pull(self, value: bool) -> None:
        assert self.token_server is not None
        self.token_server.anonymous_pull = value

    def token_requests(self) -> list[TokenRequest]:
        return self.token_server.requests() if self.token_server else []


def start_registry(work: Path, auth: Auth = Auth.NONE, *, tls: bool = False) -> Registry:
    """Start a registry keeping its files in work; close() it (or use it in `with`)."""
    work.mkdir(parents=True, exist_ok=True)
    creds = auth is not Auth.NONE
    reg = Registry(work, auth, tls=Tls.make(work / "tls") if tls else None,
                   token_server=TokenServer(work / "token") if auth is Auth.TOKEN else None,
                   username=USERNAME if creds else None, password=PASSWORD if creds else None)
    try:
        reg.start()
    except BaseException:
        reg.close()
        raise
    return reg


# ---- a registry that serves a corrupt layer --------------------------------------------------


class BadBlob(StrEnum):
    CORRUPT = "corrupt"  # same size, different bytes
    SHORT = "short"  # fewer bytes than the descriptor's size (and Content-Length says so)
    LONG = "long"  # more bytes than the descriptor's size
    CUT = "cut"  # Content-Length is right, then the connection closes halfway
    ODD_LENGTH = "oddlength"  # the right bytes, Content-Length `²` (isdigit(), but no int)
    GOOD = "good"  # the right bytes, for comparison


class BadBlobServer:
    """Just enough of /v2/ to serve one small image whose layer blob is bad.

    Repository `bad/image` serves the CORRUPT variant; `bad/<variant>` serves each
    variant, `bad/good` the intact image. The manifest and config are always right.
    """

    def __init__(self) -> None:
        self.image = ImageSpec(layers=[tar_bytes(file("hello.txt", "hello\n" * 1000))],
                               config={"Cmd": ["cat", "/hello.txt"]})
        self.manifest = self.image.manifest_bytes()
        self.manifest_digest = sha256(self.manifest)
        self.config = self.image.config_bytes()
        self.layer = self.image.blobs()[0]
        self.layer_digest = sha256(self.layer)
        self.requests: list[tuple[str, str, int]] = []
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self._server.daemon_threads = True
        self.host = f"{LOOPBACK}:{self._server.server_address[1]}"
        self.ref = f"{self.host}/bad/image:latest"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def ref_for(self, variant: BadBlob | str) -> str:
        return f"{self.host}/bad/{variant}:latest"

    def layer_bytes(self, variant: BadBlob) -> bytes:
        """The body served for the layer blob in repository bad/<variant>."""
        data = self.layer
        if variant is BadBlob.CORRUPT:
            return data[:-16] + bytes(b ^ 0xFF for b in data[-16:])
        if variant is BadBlob.SHORT:
            return data[: len(data) // 2]
        if variant is BadBlob.LONG:
            return data + b"\0" * 512
        return data

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self
        route = re.compile(r"^/v2/bad/(?P<repo>[a-z]+)/(?P<kind>manifests|blobs)/(?P<ref>.+)$")
        tags = re.compile(r"^/v2/bad/(?P<repo>[a-z]+)/tags/list$")
        repos = {"image", *BadBlob}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, ctype: str, digest: str | None = None,
                       length: int | None = None, variant_length: str | None = None) -> None:
                srv.requests.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", variant_length or
                                 str(len(body) if length is None else length))
                if digest:
                    self.send_header("Docker-Content-Digest", digest)
                self.end_headers()
                if self.command == "HEAD":
                    return
                if variant_length is not None:  # ODD_LENGTH: the body ends with the connection
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if length is not None and length > len(body):  # CUT: announce, then drop
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = _path_only(self.path)
                if path in ("/v2", "/v2/"):
                    self._reply(200, b"{}", "application/json")
                    return
                m = route.match(path)
                variant = {"image": BadBlob.CORRUPT}.get(m["repo"] if m else "", None)
                if m and variant is None:
                    with contextlib.suppress(ValueError):
                        variant = BadBlob(m["repo"])
                if m is None and (t := tags.match(path)) and t["repo"] in repos:
                    self._reply(200, dump({"name": f"bad/{t['repo']}", "tags": ["latest"]}),
                                "application/json")
                    return
                if m is None or variant is None:
                    self._not_found()
                    return
                if m["kind"] == "manifests" and m["ref"] in ("latest", srv.manifest_digest):
                    self._reply(200, srv.manifest, "application/vnd.oci.image.manifest.v1+json",
                                srv.manifest_digest)
                elif m["kind"] == "blobs" and m["ref"] == sha256(srv.config):
                    self._reply(200, srv.config, "application/octet-stream", sha256(srv.config))
                elif m["kind"] == "blobs" and m["ref"] == srv.layer_digest:
                    if variant is BadBlob.ODD_LENGTH:
                        self._reply(200, srv.layer, "application/octet-stream",
                                    srv.layer_digest, variant_length="\u00b2")
                    elif variant is BadBlob.CUT:
                        self._reply(200, srv.layer[: len(srv.layer) // 2],
                                    "application/octet-stream", srv.layer_digest,
                                    length=len(srv.layer))
                    else:
                        self._reply(200, srv.layer_bytes(variant), "application/octet-stream",
                                    srv.layer_digest)
                else:
                    self._not_found()

            do_HEAD = do_GET

            def _not_found(self) -> None:
                self._reply(404, dump({"errors": [{"code": "NOT_FOUND", "message": "no"}]}),
                            "application/json")

        return Handler


# ---- a registry that is slow on purpose --------------------------------------------------------


class Slow(StrEnum):
    HEAD = "head"  # the status line and headers of the manifest, a byte at a time
    MANIFEST = "manifest"  # the manifest's body a byte at a time
    BLOB = "blob"  # the layer's body a byte at a time (manifest and config come at once)
    STEADY = "steady"  # the layer slowly but steadily: 4 KiB every 50 ms
    RETRY = "retry"  # 503 with `Retry-After: 1000000` for the manifest
    HUGE_RETRY = "hugeretry"  # 503 with a Retry-After of 5000 digits
    GOOD = "good"  # everything at once


class SlowServer:
    """Just enough of /v2/ to serve one small image from repositories slow/<Slow>.

    A trickle sends one byte every `interval` seconds and stops after `give_up` seconds,
    so that a client that never gives up cannot keep a server thread for ever.
    """

    def __init__(self, interval: float = 0.2, give_up: float = 60.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.interval, self.give_up, self.tls = interval, give_up, tls
        self.image = ImageSpec(layers=[tar_bytes(file("noise.bin", os.urandom(96 << 10)))])
        self.manifest = self.image.manifest_bytes()
        self.config = self.image.config_bytes()
        self.layer = self.image.blobs()[0]
        self.layer_digest = sha256(self.layer)
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self._server.daemon_threads = True
        # A client that gives up mid-handshake or mid-trickle is what these tests expect.
        self._server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.host = f"{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def ref_for(self, mode: Slow) -> str:
        return f"{self.host}/slow/{mode}:latest"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self
        route = re.compile(r"^/v2/slow/(?P<mode>[a-z]+)/(?P<kind>manifests|blobs)/(?P<ref>.+)$")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                if srv.tls is not None:  # the handshake here, not in the accepting thread
                    self.request = srv.tls.wrap_socket(self.request, server_side=True)
                super().setup()

            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    super().handle()

            def _trickle(self, data: bytes, step: int = 1, interval: float | None = None
                         ) -> None:
                stop = time.monotonic() + srv.give_up
                for i in range(0, len(data), step):
                    if time.monotonic() > stop:
                        break
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                    time.sleep(srv.interval if interval is None else interval)
                self.close_connection = True

            def _reply(self, body: bytes, ctype: str, mode: Slow | None = None,
                       status: int = 200, extra: dict[str, str] | None = None) -> None:
                head = (f"HTTP/1.1 {status} {http.client.responses.get(status, 'X')}\r\n"
                        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                        + "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
                        + "\r\n").encode()
                with contextlib.suppress(OSError):
                    if mode is Slow.HEAD:
                        self._trickle(head)
                        return
                    self.wfile.write(head)
                    if mode in (Slow.MANIFEST, Slow.BLOB):
                        self._trickle(body)
                    elif mode is Slow.STEADY:
                        self._trickle(body, 4 << 10, 0.05)
                    else:
                        self.wfile.write(body)

            def do_GET(self) -> None:
                path = _path_only(self.path)
                m = route.match(path)
                mode = None
                if m:
                    with contextlib.suppress(ValueError):
                        mode = Slow(m["mode"])
                srv.requests.append((self.command, path))
                if path in ("/v2", "/v2/"):
                    self._reply(b"{}", "application/json")
                elif m is None or mode is None:
                    self._reply(b'{"errors": []}', "application/json", status=404)
                elif m["kind"] == "manifests" and mode is Slow.RETRY:
                    self._reply(b"", "text/plain", status=503,
                                extra={"Retry-After": "1000000"})
                elif m["kind"] == "manifests" and mode is Slow.HUGE_RETRY:
                    self._reply(b"", "text/plain", status=503, extra={"Retry-After": "9" * 5000})
                elif m["kind"] == "manifests":
                    self._reply(srv.manifest, "application/vnd.oci.image.manifest.v1+json",
                                mode if mode in (Slow.HEAD, Slow.MANIFEST) else None)
                elif m["ref"] == sha256(srv.config):
                    self._reply(srv.config, "application/octet-stream")
                elif m["ref"] == srv.layer_digest:
                    self._reply(srv.layer, "application/octet-stream",
                                mode if mode in (Slow.BLOB, Slow.STEADY) else None)
                else:
                    self._reply(b'{"errors": []}', "application/json", status=404)

        return Handler


# ---- pytest fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP registry with no auth, behind a recording proxy (`.host`)."""
    with start_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """HTTPS (CA in `.ca_file`, `.cert_dir`) with htpasswd basic auth (`.username`,
    `.password`), behind a recording HTTPS proxy (`.host`)."""
    with start_registry(tmp_path_factory.mktemp("auth-registry"), Auth.HTPASSWD,
                        tls=True) as reg:
        yield reg


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Plain HTTP with bearer-token auth from a test token server (`.token_requests()`,
    `.anonymous_pull`), behind a recording proxy (`.host`)."""
    with start_registry(tmp_path_factory.mktemp("token-registry"), Auth.TOKEN) as reg:
        yield reg


@pytest.fixture
def bad_blob_server() -> Iterator[BadBlobServer]:
    server = BadBlobServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def slow_server() -> Iterator[SlowServer]:
    server = SlowServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def down_host() -> str:
    """"127.0.0.1:PORT" where nothing listens (connection refused)."""
    return f"{LOOPBACK}:{free_port()}"
