"""Networking with real VMs; every byte stays on this machine's loopback.

The guest reaches the host's 127.0.0.1 through SLIRP's gateway 10.0.2.2, and the host
reaches the guest through published ports on 127.0.0.1. No test asks a resolver.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, _first_layer
from helpers import ImageSpec, oci_layout_files, write_tar

pytestmark = pytest.mark.vm

HTTPD = "mkdir -p /www; echo hi from the guest > /www/index.html; exec httpd -f -p 80 -h /www"


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, timeout: float = 60.0) -> bytes:
    """GET url, retrying while the guest's server is still starting (SLIRP resets then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return answer.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def web(vm) -> Iterator[tuple[str, int]]:
    """A detached busybox httpd published on a chosen and on a free host port."""
    port = free_port()
    out = vm.hyperrun("run", "-d", "--name", "web", "--memory", "128m", "--hostname", "web1",
                      "-p", f"127.0.0.1:{port}:80", "-p", "80",
                      "--add-host", "db:host-gateway", "--add-host", "cache:192.0.2.7",
                      "--dns", "192.0.2.53", "--dns-search", "example.test",
                      "busybox", "sh", "-c", HTTPD)
    try:
        assert out.returncode == 0, out.stderr.decode()
        yield "web", port
    finally:
        vm.hyperrun("rm", "-f", "web")


@contextlib.contextmanager
def host_server(directory: Path) -> Iterator[int]:
    """An HTTP server on the host's 127.0.0.1, serving directory."""
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_published_port_answers_the_host(vm, web) -> None:
    name, port = web
    assert fetch(f"http://127.0.0.1:{port}/") == b"hi from the guest\n"
    lines = _ok(vm.hyperrun("port", name)).splitlines()
    assert lines[0] == f"80/tcp -> 127.0.0.1:{port}"
    chosen = int(lines[1].removeprefix("80/tcp -> 127.0.0.1:"))
    assert chosen not in (0, port)
    assert fetch(f"http://127.0.0.1:{chosen}/") == b"hi from the guest\n"
    assert _ok(vm.hyperrun("port", name, "80")).splitlines() == [
        f"127.0.0.1:{port}", f"127.0.0.1:{chosen}"]
    missing = vm.hyperrun("port", name, "81/udp")
    assert missing.returncode == 1 and b"No public port '81/udp'" in missing.stderr

    [doc] = json.loads(_ok(vm.hyperrun("inspect", name)))
    assert doc["NetworkSettings"]["Ports"] == {"80/tcp": [
        {"HostIp": "127.0.0.1", "HostPort": str(port)},
        {"HostIp": "127.0.0.1", "HostPort": str(chosen)}]}
    assert doc["NetworkSettings"]["IPAddress"] == "10.0.2.15"
    assert doc["HostConfig"]["NetworkMode"] == "user"
    assert doc["HostConfig"]["ExtraHosts"] == ["db:10.0.2.2", "cache:192.0.2.7"]
    [row] = [json.loads(line) for line in _ok(vm.hyperrun("ps", "--format", "json"))
             .splitlines() if json.loads(line)["Names"] == name]
    assert row["Ports"] == f"127.0.0.1:{port}->80/tcp, 127.0.0.1:{chosen}->80/tcp"
    assert "->80/tcp" in _ok(vm.hyperrun("ps"))


def test_the_guest_reaches_the_host_through_the_gateway(vm, web, tmp_path: Path) -> None:
    (tmp_path / "page.txt").write_text("served by the host\n")
    with host_server(tmp_path) as port:
        out = vm.hyperrun("exec", web[0], "wget", "-q", "-O", "-",
                          f"http://10.0.2.2:{port}/page.txt")
        assert _ok(out) == "served by the host\n"


def test_hosts_and_resolv_conf(vm, web) -> None:
    name = web[0]
    hosts = _ok(vm.hyperrun("exec", name, "cat", "/etc/hosts")).splitlines()
    assert hosts[0] == "127.0.0.1\tlocalhost"
    assert hosts[-3:] == ["10.0.2.2\tdb", "192.0.2.7\tcache", "10.0.2.15\tweb1"]
    assert _ok(vm.hyperrun("exec", name, "cat", "/etc/resolv.conf")) == (
        "nameserver 192.0.2.53\nsearch example.test\n")
    # --add-host resolves through the C library's hosts file (ping resolves, then sends
    # one echo to the gateway, which SLIRP answers itself).
    ping = _ok(vm.hyperrun("exec", name, "ping", "-c", "1", "-W", "5", "db"))
    assert ping.startswith("PING db (10.0.2.2)"), ping
    assert _ok(vm.hyperrun("exec", name, "hostname")) == "web1\n"
    addr = _ok(vm.hyperrun("exec", name, "ip", "-4", "addr", "show", "eth0"))
    assert "inet 10.0.2.15/24" in addr
    assert "default via 10.0.2.2 dev eth0" in _ok(vm.hyperrun("exec", name, "ip", "route"))


def test_a_host_port_in_use_is_refused_before_booting(vm, web) -> None:
    out = vm.run("--name", "second", "-p", f"127.0.0.1:{web[1]}:80", "busybox", "true")
    assert out.returncode == 125
    [line] = out.stderr.decode().splitlines()
    assert line.startswith(f"hyperrun: cannot publish 127.0.0.1:{web[1]}/tcp: the port is "
                           "already in use (hint: ")
    assert "second" not in _ok(vm.hyperrun("ps", "-a", "--format", "{{.Names}}")).split()


def test_network_none_has_only_lo_and_it_is_up(vm) -> None:
    out = vm.run("--network", "none", "--hostname", "island", "busybox", "sh", "-c",
                 "ls /sys/class/net; cat /sys/class/net/lo/operstate; ip -4 addr show lo; "
                 "cat /etc/hosts; test -e /etc/resolv.conf || echo no-resolv")
    text = _ok(out)
    lines = text.splitlines()
    assert lines[:2] == ["lo", "unknown"], text  # lo only; a loopback's "up" is unknown
    assert "inet 127.0.0.1/8" in text and "eth0" not in text
    assert "127.0.0.1\tisland" in lines and lines[-1] == "no-resolv"


def test_user_network_default_resolver_and_loopback(vm) -> None:
    out = vm.run("busybox", "sh", "-c",
                 "cat /etc/resolv.conf; ls /sys/class/net; cat /sys/class/net/eth0/mtu")
    assert _ok(out) == "nameserver 10.0.2.3\neth0\nlo\n1500\n"


# -- -P: the ports the image exposes --------------------------------------------------------


@pytest.fixture(scope="module")
def exposing(vm, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox with a config that EXPOSEs 80/tcp and 53/udp and runs httpd on 80."""
    work = tmp_path_factory.mktemp("exposing")
    busybox = work / "busybox.tar"
    subprocess.run([sys.executable, str(REPO / "scripts/make-busybox-image"), str(busybox)],
                   check=True)
    image = ImageSpec(layers=[_first_layer(busybox)], config={
        "Cmd": ["sh", "-c", HTTPD], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}}})
    archive = write_tar(oci_layout_files([(image, "exposing:latest")]), work / "exposing.tar")
    _ok(vm.hyperrun("load", "-q", "-i", str(archive)))
    return "exposing:latest"


def test_publish_all_publishes_what_the_image_exposes(vm, exposing: str) -> None:
    [image] = json.loads(_ok(vm.hyperrun("inspect", exposing)))
    assert image["Config"]["ExposedPorts"] == {"53/udp": {}, "80/tcp": {}}
    _ok(vm.hyperrun("run", "-d", "--name", "pall", "--memory", "128m", "-P", exposing))
    try:
        ports = dict(line.split(" -> ") for line in
                     _ok(vm.hyperrun("port", "pall")).splitlines())
        assert set(ports) == {"53/udp", "80/tcp"}
        for bound in ports.values():
            host, _, port = bound.partition(":")
            assert host == "127.0.0.1" and int(port) > 0  # local only, a free port each
        web = ports["80/tcp"]
        assert fetch(f"http://{web}/") == b"hi from the guest\n"
        [row] = [json.loads(line) for line in _ok(vm.hyperrun("ps", "--format", "json"))
                 .splitlines() if json.loads(line)["Names"] == "pall"]
        assert f"{web}->80/tcp" in row["Ports"] and f"{ports['53/udp']}->53/udp" in row["Ports"]
    finally:
        vm.hyperrun("rm", "-f", "pall")


# -- DNS: the guest asks a resolver the test runs on the host's loopback --------------------


def dns_answer(query: bytes, names: dict[str, str]) -> tuple[str, bytes] | None:
    """The name asked and the DNS reply: names' A record, no data for other types (AAAA),
    NXDOMAIN for names not in names; None for what is not one plain query."""
    if len(query) < 12:
        return None
    qid, flags, count = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or count != 1:
        return None
    end, labels = 12, []
    while end < len(query) and query[end]:
        labels.append(query[end + 1:end + 1 + query[end]].decode("ascii", "replace"))
        end += 1 + query[end]
    if end + 5 > len(query):
        return None
    qtype, _ = struct.unpack("!HH", query[end + 1:end + 5])
    name = ".".join(labels).lower()
    question, ip = query[12:end + 5], names.get(name)
    if ip is None:
        return name, struct.pack("!6H", qid, 0x8183, 1, 0, 0, 0) + question
    if qtype != 1:
        return name, struct.pack("!6H", qid, 0x8180, 1, 0, 0, 0) + question
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ip)
    return name, struct.pack("!6H", qid, 0x8180, 1, 1, 0, 0) + question + record


@contextlib.contextmanager
def loopback_resolver(names: dict[str, str]) -> Iterator[list[str]]:
    """A resolver on the host's 127.0.0.1:53 (UDP); yields the names it was asked.

    SLIRP sends the guest's datagrams for the gateway 10.0.2.2 to the host's 127.0.0.1 on
    the same port, so the guest's `nameserver 10.0.2.2` reaches it on port 53 only.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 53))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            pytest.skip(f"127.0.0.1:53/udp is not ours to bind ({exc.strerror})")
        raise
    asked: list[str] = []
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            answered = dns_answer(query, names)
            if answered is not None:
                asked.append(answered[0])
                sock.sendto(answered[1], peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield asked
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_the_guest_resolves_through_a_resolver_on_the_hosts_loopback(vm) -> None:
    with loopback_resolver({"svc.hyperrun.test": "192.0.2.44"}) as asked:
        out = vm.run("--dns", "10.0.2.2", "busybox", "sh", "-c",
                     "cat /etc/resolv.conf; nslookup svc.hyperrun.test; echo status=$?; "
                     "nslookup gone.hyperrun.test; echo status=$?")
    text = _ok(out)
    assert text.startswith("nameserver 10.0.2.2\n"), text  # no other resolver to ask
    found, missing = text.split("status=0\n")
    assert "Name:\tsvc.hyperrun.test\nAddress: 192.0.2.44" in found, text
    assert "NXDOMAIN" in missing and missing.endswith("status=1\n"), text
    assert set(asked) == {"svc.hyperrun.test", "gone.hyperrun.test"}, asked
