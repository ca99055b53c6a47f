"""A container's network: -p, --dns, --add-host parsed; host ports checked; the guest's files.

The guest sits on QEMU's user network (SLIRP), whose addresses are fixed: the guest is
10.0.2.15/24, 10.0.2.2 reaches the host's own 127.0.0.1 (docker's `host-gateway`), and
10.0.2.3 is SLIRP's resolver, which asks the host's. The agent configures eth0 statically
from the CONTAINER message (no DHCP) and writes /etc/hosts and /etc/resolv.conf.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import re
import socket
from collections.abc import Iterable, Iterator
from typing import Any

from hyperrun import log
from hyperrun.containers.records import Settings
from hyperrun.errors import HyperrunError, UsageError
from hyperrun.images.model import ExposedPort
from hyperrun.spec import NetworkMode, NetworkSpec, PortMapping, Protocol

GUEST_CIDR = "10.0.2.15/24"
GUEST_IP = GUEST_CIDR.split("/")[0]
GATEWAY = "10.0.2.2"
SLIRP_DNS = "10.0.2.3"
MTU = 1500  # SLIRP's
DEFAULT_HOST_IP = "127.0.0.1"  # publishing on every interface is the user's explicit choice
HOST_GATEWAY = "host-gateway"

_PUBLISH_RE = re.compile(
    r"(?:(?:(?P<ip>[0-9.]+):)?(?P<host>\d{0,5}):)?(?P<guest>\d{1,5})(?:/(?P<proto>[a-z]+))?",
    re.ASCII)
_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})", re.ASCII)
PUBLISH_HINT = "use -p [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp], e.g. -p 8080:80"


class PortInUse(HyperrunError):
    def __init__(self, p: PortMapping, why: str) -> None:
        super().__init__(
            f"cannot publish {p.host_ip}:{p.host_port}/{p.protocol}: {why}",
            hint="publish on another host port, or stop what holds this one")


def _port(text: str, what: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"invalid {what} in -p {spec!r}: want 1 to 65535", hint=PUBLISH_HINT)
    return int(text)


def parse_publish(spec: str) -> PortMapping:
    """One -p as docker takes it (IPv4 host addresses only); host port 0: choose one."""
    found = _PUBLISH_RE.fullmatch(spec.strip())
    if found is None and spec.strip().startswith("["):
        # QEMU 7.2's SLIRP parses hostfwd host addresses as IPv4 only ("Bad host address").
        raise UsageError(f"cannot publish on an IPv6 host address (-p {spec!r}): the user "
                         "network forwards from IPv4 host addresses only",
                         hint="publish on 127.0.0.1 (the default) or another IPv4 address")
    if found is None:
        raise UsageError(f"invalid -p {spec!r}", hint=PUBLISH_HINT)
    host_ip = found["ip"] or DEFAULT_HOST_IP
    try:
        ipaddress.IPv4Address(host_ip)
    except ValueError:
        raise UsageError(f"invalid host address in -p {spec!r}",
                         hint="give an IPv4 address such as 127.0.0.1 or 0.0.0.0") from None
    proto = found["proto"] or "tcp"
    if proto not in tuple(Protocol):
        raise UsageError(f"invalid protocol in -p {spec!r}", hint="use /tcp or /udp")
    host = _port(found["host"], "host port", spec) if found["host"] else 0
    return PortMapping(host_ip, host, _port(found["guest"], "container port", spec),
                       Protocol(proto))


def _address(text: str) -> str:
    """An IPv4 or IPv6 address; no IPv6 zone (its text is free-form: it could hold a newline)."""
    address = ipaddress.ip_address(text)
    if "%" in text:
        raise ValueError(text)
    return str(address)


def parse_add_host(spec: str) -> tuple[str, str]:
    """--add-host NAME:IP (IP may be IPv6, or host-gateway: the address that reaches the host)."""
    name, sep, ip = spec.partition(":")
    if not sep or not _NAME_RE.fullmatch(name):
        raise UsageError(f"invalid --add-host {spec!r}", hint="use NAME:IP, e.g. db:10.0.2.2")
    if ip == HOST_GATEWAY:
        return name, GATEWAY
    try:
        return name, _address(ip.strip("[]"))
    except ValueError:
        raise UsageError(f"invalid IP address in --add-host {spec!r}",
                         hint=f"use NAME:IP or NAME:{HOST_GATEWAY}") from None


def parse_dns(server: str) -> str:
    try:
        return _address(server)
    except ValueError:
        raise UsageError(f"invalid --dns {server!r}", hint="give a nameserver's IP address") \
            from None


def parse_dns_search(domain: str) -> str:
    if domain != "." and not _NAME_RE.fullmatch(domain):
        raise UsageError(f"invalid --dns-search {domain!r}", hint="give a domain name")
    return domain


def network_spec(mode: str, publish: Iterable[str], dns: Iterable[str],
                 dns_search: Iterable[str], add_host: Iterable[str],
                 publish_all: bool = False) -> NetworkSpec:
    """The command line's network options, validated (docker's rules where it has them)."""
    try:
        network = NetworkMode(mode)
    except ValueError:
        raise UsageError(f"unknown --network {mode!r}",
                         hint="use user (QEMU's user-mode network) or none") from None
    ports = tuple(parse_publish(p) for p in publish)
    if (ports or publish_all) and network is NetworkMode.NONE:
        raise UsageError("conflicting options: port publishing and --network none",
                         hint="drop -p and -P, or use --network user")
    _no_duplicates(ports)
    return NetworkSpec(network, ports, tuple(parse_dns(d) for d in dns),
                       tuple(parse_dns_search(d) for d in dns_search),
                       tuple(parse_add_host(h) for h in add_host), publish_all)


def published(spec: NetworkSpec, exposed: Iterable[ExposedPort] | None) -> tuple[PortMapping, ...]:
    """The ports to publish: -p's, and with -P every exposed port -p left out, each on a
    free port of 127.0.0.1 (docker's -P takes every interface; ours stays local)."""
    if not spec.publish_all:
        return spec.ports
    taken = {(p.container_port, p.protocol) for p in spec.ports}
    wanted = [e for e in exposed or () if (e.port, e.protocol) not in taken]
    for e in wanted:
        if e.protocol not in tuple(Protocol):
            log.warning(f"-P: the image exposes {e}; the user network carries only tcp and udp, "
                        "so it is not published")
    return spec.ports + tuple(PortMapping(DEFAULT_HOST_IP, 0, e.port, Protocol(e.protocol))
                              for e in wanted if e.protocol in tuple(Protocol))


def _no_duplicates(ports: Iterable[PortMapping]) -> None:
    seen: set[tuple[str, int, str]] = set()
    for p in ports:
        key = (p.host_ip, p.host_port, p.protocol)
        if p.host_port and key in seen:
            raise UsageError(f"host port {p.host_ip}:{p.host_port}/{p.protocol} is published "
                             "twice", hint="give each -p its own host port")
        seen.add(key)


# -- host ports ---------------------------------------------------------------------------


_BIND_ERRORS = {errno.EADDRINUSE: "the port is already in use",
                errno.EACCES: "permission denied",
                errno.EADDRNOTAVAIL: "this host has no such address"}


@contextlib.contextmanager
def _bound(p: PortMapping) -> Iterator[socket.socket]:
    kind = socket.SOCK_STREAM if p.protocol is Protocol.TCP else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
    try:
        if kind == socket.SOCK_STREAM:
            # As QEMU binds its forwarding sockets: connections of a container that just
            # ended (TIME_WAIT) do not make the port busy, a listener does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((p.host_ip, p.host_port))
        except OSError as exc:
            why = _BIND_ERRORS.get(exc.errno or 0, exc.strerror or str(exc))
            raise PortInUse(p, why) from None
        yield sock
    finally:
        sock.close()


def check_free(ports: Iterable[PortMapping]) -> None:
    """Refuse, before a VM boots, host ports something else holds (QEMU's error is vaguer).

    A bind test: between it and QEMU's own bind another program may still take the port.
    """
    for p in ports:
        with _bound(p):
            pass


def allocate(ports: Iterable[PortMapping]) -> tuple[PortMapping, ...]:
    """ports with every host port 0 replaced by a free one (the kernel's choice)."""
    out = []
    for p in ports:
        if p.host_port == 0:
            with _bound(p) as sock:
                p = PortMapping(p.host_ip, sock.getsockname()[1], p.container_port, p.protocol)
        out.append(p)
    _no_duplicates(out)
    return tuple(out)


# -- records ------------------------------------------------------------------------------


def port_record(p: PortMapping) -> str:
    return f"{p.protocol}:{p.host_ip}:{p.host_port}:{p.container_port}"


def ports_of(records: Iterable[str]) -> tuple[PortMapping, ...]:
    """The recorded ports (port_record's form); a malformed entry is left out."""
    out = []
    for text in records:
        proto, _, rest = text.partition(":")
        ip, _, ports = rest.partition(":")
        host, _, guest = ports.partition(":")
        if proto in tuple(Protocol) and host.isdigit() and guest.isdigit():
            out.append(PortMapping(ip, int(host), int(guest), Protocol(proto)))
    return tuple(out)


def docker_ports(ports: Iterable[PortMapping]) -> dict[str, list[dict[str, str]]]:
    """NetworkSettings.Ports in docker's shape: {"80/tcp": [{"HostIp", "HostPort"}]}."""
    out: dict[str, list[dict[str, str]]] = {}
    for p in ports:
        out.setdefault(f"{p.container_port}/{p.protocol}", []).append(
            {"HostIp": p.host_ip, "HostPort": str(p.host_port)})
    return out


# -- the guest's side ---------------------------------------------------------------------

_LOCALHOST = ("127.0.0.1\tlocalhost\n"
              "::1\tlocalhost ip6-localhost ip6-loopback\n"
              "fe00::0\tip6-localnet\n"
              "ff00::0\tip6-mcastprefix\n"
              "ff02::1\tip6-allnodes\n"
              "ff02::2\tip6-allrouters\n")


def hosts_file(mode: NetworkMode, hostname: str, extra_hosts: Iterable[tuple[str, str]]) -> str:
    """/etc/hosts as docker writes it: localhost, the --add-host entries, the hostname."""
    lines = [_LOCALHOST, *(f"{ip}\t{name}\n" for name, ip in extra_hosts)]
    own = GUEST_IP if mode is NetworkMode.USER else "127.0.0.1"
    lines.append(f"{own}\t{hostname}\n")
    return "".join(lines)


def resolv_conf(dns: Iterable[str], search: Iterable[str]) -> str:
    servers = list(dns) or [SLIRP_DNS]
    text = "".join(f"nameserver {s}\n" for s in servers)
    domains = [d for d in search if d != "."]  # docker's way to say "no search domains"
    return text + (f"search {' '.join(domains)}\n" if domains else "")


def guest_fields(s: Settings) -> list[tuple[str, str | int]]:
    """The network keys of CONTAINER (docs/protocol.md) for a container's recorded settings."""
    mode = NetworkMode(s.network or NetworkMode.NONE)
    fields: list[tuple[str, str | int]] = [("net", str(mode))]
    if mode is NetworkMode.USER:
        fields += [("ip", GUEST_CIDR), ("gw", GATEWAY), ("mtu", MTU),
                   ("resolv", resolv_conf(s.dns, s.dns_search))]
    hosts = tuple((name, ip) for name, _, ip in (h.partition(":") for h in s.extra_hosts))
    fields.append(("hosts", hosts_file(mode, s.hostname, hosts)))
    return fields


def settings(spec: NetworkSpec, ports: Iterable[PortMapping]) -> dict[str, Any]:
    """The records.Settings fields of a network (ports as allocated)."""
    return {"network": str(spec.mode), "ports": tuple(port_record(p) for p in ports),
            "dns": spec.dns, "dns_search": spec.dns_search,
            "extra_hosts": tuple(f"{name}:{ip}" for name, ip in spec.extra_hosts)}
