"""A container's network without a VM: options, host ports, records, the guest's files, XML."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from helpers import ImageSpec, file, oci_layout_files, tar_bytes, write_tar
from test_domain_xml import _vm

from hyperrun.cli import build_parser
from hyperrun.cli import run as cli_run
from hyperrun.containers import network
from hyperrun.containers.records import Settings
from hyperrun.errors import InvalidImage, UsageError
from hyperrun.images.load import Loader
from hyperrun.images.model import MAX_EXPOSED_PORTS, ExposedPort
from hyperrun.images.store import ImageStore
from hyperrun.spec import NetworkMode, NetworkSpec, PortMapping, Protocol
from hyperrun.vm.domain_xml import QEMU_NS, domain_xml

TCP, UDP = Protocol.TCP, Protocol.UDP


def _net(*argv: str) -> NetworkSpec:
    return cli_run.to_spec(build_parser().parse_args(["run", *argv, "img"])).network


@pytest.mark.parametrize(("text", "want"), [
    ("80", PortMapping("127.0.0.1", 0, 80, TCP)),
    ("8080:80", PortMapping("127.0.0.1", 8080, 80, TCP)),
    ("8080:80/udp", PortMapping("127.0.0.1", 8080, 80, UDP)),
    ("0.0.0.0:8080:80/tcp", PortMapping("0.0.0.0", 8080, 80, TCP)),
    ("127.0.0.2::53/udp", PortMapping("127.0.0.2", 0, 53, UDP)),
])
def test_publish_as_docker_takes_it(text: str, want: PortMapping) -> None:
    assert network.parse_publish(text) == want


@pytest.mark.parametrize("text", [
    "", "http", "0", "65536", "80:0", "99999:80", "8080:80/sctp", "1.2.3:8080:80",
    "localhost:8080:80", "[::1]:8080:80", "8080:80/", "-1:80", "8080-8081:80",
])
def test_publish_refused(text: str) -> None:
    with pytest.raises(UsageError):
        network.parse_publish(text)


def test_network_options_become_a_spec() -> None:
    assert _net() == NetworkSpec(NetworkMode.USER)
    spec = _net("-p", "8080:80", "-p", "53/udp", "--dns", "10.0.2.9", "--dns-search", "ex.test",
                "--add-host", "db:10.1.2.3", "--add-host", "host:host-gateway",
                "--add-host", "v6:[::1]")
    assert spec.ports == (PortMapping("127.0.0.1", 8080, 80), PortMapping("127.0.0.1", 0, 53, UDP))
    assert spec.dns == ("10.0.2.9",) and spec.dns_search == ("ex.test",)
    assert spec.extra_hosts == (("db", "10.1.2.3"), ("host", "10.0.2.2"), ("v6", "::1"))
    assert _net("--network", "none").mode is NetworkMode.NONE


@pytest.mark.parametrize("argv", [
    ("--network", "bridge"), ("--network", "none", "-p", "80"), ("-p", "80:80", "-p", "80:81"),
    ("--dns", "resolver.example"), ("--add-host", "db"), ("--add-host", "db:nowhere"),
    ("--add-host", "bad name:1.2.3.4"), ("--dns-search", "a b"), ("--dns", "fe80::1%x\ny"),
    ("--add-host", "db:fe80::1%eth0"),
])
def test_network_options_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(UsageError):
        _net(*argv)


def test_a_busy_host_port_is_refused_and_a_free_one_chosen() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(network.PortInUse, match=f"127.0.0.1:{taken}/tcp: the port is "
                                                    "already in use"):
            network.check_free([PortMapping("127.0.0.1", taken, 80)])
        network.check_free([PortMapping("127.0.0.1", taken, 80, UDP)])  # udp is another port
        [chosen] = network.allocate([PortMapping("127.0.0.1", 0, 80)])
        assert chosen.host_port not in (0, taken) and chosen.container_port == 80
    with pytest.raises(network.PortInUse, match="no such address"):
        network.check_free([PortMapping("192.0.2.1", 8080, 80)])


def test_records_round_trip() -> None:
    ports = (PortMapping("127.0.0.1", 8080, 80), PortMapping("0.0.0.0", 5353, 53, UDP))
    spec = NetworkSpec(NetworkMode.USER, ports, ("1.1.1.1",), ("ex.test",), (("db", "::1"),))
    fields = network.settings(spec, ports)
    assert fields["ports"] == ("tcp:127.0.0.1:8080:80", "udp:0.0.0.0:5353:53")
    assert fields["extra_hosts"] == ("db:::1",)  # docker's ExtraHosts form
    assert network.ports_of(fields["ports"]) == ports
    assert network.ports_of(["tcp:1.2.3.4:x:80", "sctp:1.2.3.4:1:2"]) == ()
    assert network.docker_ports(ports) == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}]}


def test_guest_fields_of_a_user_network() -> None:
    s = Settings(hostname="web", network="user", dns=("192.0.2.53",), dns_search=("a.test",),
                 extra_hosts=("db:10.0.2.2", "v6:::1"))
    fields = dict(network.guest_fields(s))
    assert (fields["net"], fields["ip"], fields["gw"], fields["mtu"]) == (
        "user", "10.0.2.15/24", "10.0.2.2", 1500)
    assert fields["resolv"] == "nameserver 192.0.2.53\nsearch a.test\n"
    hosts = str(fields["hosts"]).splitlines()
    assert hosts[0] == "127.0.0.1\tlocalhost"
    assert hosts[-3:] == ["10.0.2.2\tdb", "::1\tv6", "10.0.2.15\tweb"]
    default = dict(network.guest_fields(Settings(hostname="h", network="user")))
    assert default["resolv"] == "nameserver 10.0.2.3\n"  # SLIRP's resolver


def test_guest_fields_without_a_network() -> None:
    for record in ("none", ""):  # "": a record from before networks
        fields = dict(network.guest_fields(Settings(hostname="h", network=record)))
        assert set(fields) == {"net", "hosts"} and fields["net"] == "none"
        assert str(fields["hosts"]).endswith("127.0.0.1\th\n")


def test_domain_without_network_has_no_nic() -> None:
    xml = domain_xml(_vm())
    assert "<interface" not in xml and "qemu:" not in xml


def test_domain_with_user_network_and_no_ports() -> None:
    root = ET.fromstring(domain_xml(replace(_vm(), network=NetworkMode.USER)))
    [nic] = root.findall("devices/interface")
    assert nic.get("type") == "user" and nic.find("model").get("type") == "virtio"
    assert nic.find("rom").get("enabled") == "no"


def test_domain_with_published_ports_forwards_them() -> None:
    ports = (PortMapping("127.0.0.1", 8080, 80), PortMapping("0.0.0.0", 5353, 53, UDP))
    root = ET.fromstring(domain_xml(replace(_vm(), network=NetworkMode.USER, ports=ports)))
    assert root.findall("devices/interface") == []
    args = [a.get("value") for a in root.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert args == ["-netdev",
                    "user,id=hrnet0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:0.0.0.0:5353-:53",
                    "-device", "virtio-net-pci,netdev=hrnet0,bus=pci.0,addr=0x1f,romfile="]


# -- -P: the image's ExposedPorts ---------------------------------------------------------


def _load(images: ImageStore, tmp_path, exposed: object) -> tuple[ExposedPort, ...] | None:
    spec = ImageSpec(layers=[tar_bytes(file("x", "x"))],
                     config={"Cmd": ["sh"], "ExposedPorts": exposed})
    (loaded,) = Loader(images).load(write_tar(oci_layout_files([(spec, "exp:1")]),
                                              tmp_path / "exp.tar"))
    return images.get(loaded.image.id).config.exposed_ports


def test_exposed_ports_come_from_the_image_config(images: ImageStore, tmp_path) -> None:
    got = _load(images, tmp_path, {"8080": {}, "80/tcp": {}, "53/udp": {}, "53/tcp": {}})
    assert got == (ExposedPort(53, TCP), ExposedPort(53, UDP), ExposedPort(80, TCP),
                   ExposedPort(8080, TCP))
    assert [str(p) for p in got] == ["53/tcp", "53/udp", "80/tcp", "8080/tcp"]
    assert _load(images, tmp_path, None) is None


@pytest.mark.parametrize("exposed", [
    ["80/tcp"], {"0/tcp": {}}, {"65536/tcp": {}}, {"80/dccp": {}}, {"80-90/tcp": {}},
    {"http": {}}, {"80/tcp\n": {}}, {" 80": {}}, {"80/TCP": {}}, {"80/tcp": 1},
    {"80/tcp": []}, {f"{p}/tcp": {} for p in range(1, MAX_EXPOSED_PORTS + 2)},
], ids=lambda v: str(v)[:30])
def test_bad_exposed_ports_refuse_the_image(images: ImageStore, tmp_path,
                                             exposed: object) -> None:
    with pytest.raises(InvalidImage, match="ExposedPorts"):
        _load(images, tmp_path, exposed)
    assert not list(images.list())


def test_publish_all_adds_every_exposed_port_that_p_left_out() -> None:
    exposed = (ExposedPort(53, UDP), ExposedPort(80, TCP), ExposedPort(443, TCP))
    assert network.published(_net("-p", "80"), exposed) == (PortMapping("127.0.0.1", 0, 80),)
    spec = _net("-P", "-p", "0.0.0.0:8080:80")
    assert spec.publish_all and _net("--publish-all").publish_all
    assert network.published(spec, exposed) == (
        PortMapping("0.0.0.0", 8080, 80), PortMapping("127.0.0.1", 0, 53, UDP),
        PortMapping("127.0.0.1", 0, 443))
    assert network.published(_net("-P"), None) == ()
    with pytest.raises(UsageError, match="--network none"):
        _net("-P", "--network", "none")


def test_an_exposed_sctp_port_loads_and_is_left_out_of_publish_all(
        images: ImageStore, tmp_path, capfd) -> None:
    """docker images may EXPOSE sctp; the user network cannot carry it, so -P says so."""
    exposed = _load(images, tmp_path, {"80/tcp": {}, "9899/sctp": {}})
    assert exposed is not None and [str(p) for p in exposed] == ["80/tcp", "9899/sctp"]
    assert network.published(_net("-P"), exposed) == (PortMapping("127.0.0.1", 0, 80),)
    assert "9899/sctp" in capfd.readouterr().err


@pytest.mark.parametrize("text", ["[::1]:8080:80", "[::]::80/udp", "[fe80::1%lo]:80:80"])
def test_ipv6_host_addresses_are_refused_with_the_reason(text: str) -> None:
    """QEMU 7.2's user network cannot forward from an IPv6 host address (measured)."""
    with pytest.raises(UsageError, match="IPv6 host address") as refused:
        network.parse_publish(text)
    assert "127.0.0.1" in (refused.value.hint or "")
