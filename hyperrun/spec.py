"""Typed, frozen specifications passed from the command line down to the VM."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from hyperrun import capabilities


class Accel(enum.StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


class PullPolicy(enum.StrEnum):
    """When `run` pulls its image: if it is not in the store, every time, or never."""

    MISSING = "missing"
    ALWAYS = "always"
    NEVER = "never"


class NetworkMode(enum.StrEnum):
    """--network: QEMU's user-mode network (SLIRP) behind a virtio NIC, or only `lo`."""

    USER = "user"
    NONE = "none"


class Protocol(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True)
class PortMapping:
    """One -p: a host address and port forwarded to a port of the guest's eth0."""

    host_ip: str
    host_port: int  # 0: a free one is chosen when the container is created
    container_port: int
    protocol: Protocol = Protocol.TCP

    def __str__(self) -> str:
        """docker's `ps` form, e.g. 127.0.0.1:8080->80/tcp."""
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class NetworkSpec:
    """The container's network as the command line asked for it (validated)."""

    mode: NetworkMode = NetworkMode.USER
    ports: tuple[PortMapping, ...] = ()
    dns: tuple[str, ...] = ()  # --dns: nameservers; () means SLIRP's resolver
    dns_search: tuple[str, ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()  # --add-host NAME:IP, host-gateway resolved
    publish_all: bool = False  # -P: every port the image exposes, on a free 127.0.0.1 port


class MountType(enum.StrEnum):
    """What a -v, --mount or --tmpfs puts at its target (docker's mount types)."""

    BIND = "bind"  # a host directory
    VOLUME = "volume"  # a named (or anonymous) volume in the store
    TMPFS = "tmpfs"  # a guest tmpfs, gone with the VM


@dataclass(frozen=True)
class Mount:
    """One mount of the container, as the command line asked for it (validated)."""

    type: MountType
    target: str  # absolute path inside the container, normalised
    source: str = ""  # BIND: absolute host path; VOLUME: name ("" until one is generated)
    readonly: bool = False
    anonymous: bool = False  # VOLUME without a name: `rm -v` removes it with the container
    tmpfs_size: int = 0  # TMPFS: bytes (0: the guest kernel's default, half its RAM)
    tmpfs_mode: int = 0o1777  # TMPFS: permission bits of its root
    nocopy: bool = False  # VOLUME: do not fill an empty volume with the image's content


@dataclass(frozen=True)
class Share:
    """A host directory the VM's file server exports under a tag (domain_xml renders it)."""

    tag: str
    source: Path
    driver: str = "virtiofs"  # or "9p" (kept for benchmarks, docs/benchmarks.md)
    readonly: bool = False


@dataclass(frozen=True)
class WinSize:
    """A terminal's size in character cells."""

    rows: int
    cols: int


@dataclass(frozen=True)
class ProcessSpec:
    """One process inside the guest, as the agent's EXEC message carries it."""

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    tty: bool = False
    stdin: bool = False
    # Capability names (hyperrun.capabilities); None: every one the guest kernel has.
    capabilities: frozenset[str] | None = capabilities.DEFAULT
    # "busybox": args[0] is an applet of the agent's own busybox, not a program of the
    # image (`top`, `cp`; docs/protocol.md "The agent's tools").
    tool: str = ""


@dataclass(frozen=True)
class RunSpec:
    """Everything `hyperrun run` was asked to do, after validation."""

    image: str
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    name: str | None = None
    tty: bool = False
    interactive: bool = False
    remove: bool = False
    detach: bool = False  # -d: the VM outlives this command; print the id and return
    log_max_size: int = 10 << 20  # --log-opt max-size / max-file, docker's defaults
    log_max_files: int = 3
    restart: str = "no"  # the restart policy, as --restart gave it (validated)
    cpus: int = 1
    memory_mib: int = 512
    accel: Accel = Accel.AUTO
    kernel: Path | None = None
    pull: PullPolicy = PullPolicy.MISSING
    quiet: bool = False  # no pull progress
    # --privileged, --cap-add and --cap-drop resolved by docker's rules; None: all of them.
    capabilities: frozenset[str] | None = capabilities.DEFAULT
    network: NetworkSpec = NetworkSpec()
    mounts: tuple[Mount, ...] = ()  # -v, --mount, --tmpfs


@dataclass(frozen=True)
class DomainOwner:
    """Which store and container a libvirt domain belongs to (kept in its <metadata>).

    One libvirt serves every store on the host, so a domain is only acted on (status,
    destroy) after its metadata shows it is this store's and this container's.
    """

    store_id: str
    container_id: str


@dataclass(frozen=True)
class VmSpec:
    """What libvirt needs to boot one container's VM; domain_xml turns it into XML."""

    name: str
    uuid: str
    accel: Accel
    vcpus: int
    memory_mib: int
    kernel: Path
    initrd: Path
    cmdline: str
    overlay: Path
    base: Path
    ctl_socket: Path
    io_socket: Path
    console_log: Path
    owner: DomainOwner
    loader: Path | None = None
    emulator: Path | None = None
    # TCG's translation cache in MiB (None: QEMU's default); it dominates QEMU's own RSS.
    tb_cache_mib: int | None = None
    # A virtio balloon that only does free page reporting: the guest hands back what it
    # frees, so memory a container used once stops counting on the host.
    free_page_reporting: bool = False
    # Back guest RAM with a memfd rather than anonymous memory: QEMU asks for transparent
    # huge pages on the latter, and each 4 KiB the guest touches then costs 2 MiB; shmem
    # gets none (the host's default shmem_enabled=never).
    memfd_ram: bool = False
    network: NetworkMode = NetworkMode.NONE  # USER: a virtio NIC on QEMU's user network
    ports: tuple[PortMapping, ...] = ()  # host ports forwarded to the guest (USER only)
    shares: tuple[Share, ...] = ()  # host directories for volumes (virtio-fs needs shared RAM)
