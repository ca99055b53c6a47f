"""`hyperrun inspect`: containers and images as JSON, in docker's shape where it applies."""

from __future__ import annotations

import argparse
import datetime
import json
import re
from typing import Any

import libvirt

from hyperrun import log
from hyperrun import reference as references
from hyperrun.cli.format import Template
from hyperrun.containers import mounts, network, records, restart, status, volumes
from hyperrun.errors import (
    ContainerNotFound,
    HyperrunError,
    ImageNotFound,
    NoSuchObject,
    UsageError,
)
from hyperrun.images.model import Image
from hyperrun.images.store import ImageStore
from hyperrun.store import Store
from hyperrun.vm import hypervisor

ZERO_TIME = "0001-01-01T00:00:00Z"  # what docker shows for a time that never came
_IMAGE_ID_RE = re.compile(r"(?:sha256:)?[0-9a-f]{1,64}")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("inspect", help="show containers or images as JSON")
    p.add_argument("-f", "--format", metavar="TEMPLATE",
                   help="print each object through a template, e.g. '{{.State.Status}}' "
                        "or '{{json .Config}}'")
    p.add_argument("--type", choices=["container", "image"],
                   help="only look for this kind of object (default: a container, then an "
                        "image)")
    p.add_argument("--connect", help="libvirt URI")
    p.add_argument("names", nargs="+", metavar="NAME|ID")
    p.set_defaults(func=inspect)


def rfc3339(when: float) -> str:
    if not when:
        return ZERO_TIME
    moment = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def container_doc(s: status.Status, store: Store) -> dict[str, Any]:
    c, cfg = s.container, s.container.settings
    files = records.paths(store, c.id)
    args = c.args
    exited = s.state is status.State.EXITED
    return {
        "Id": c.id,
        "Created": rfc3339(c.created),
        "Path": args[0] if args else "",
        "Args": list(args[1:]),
        "State": {
            "Status": s.docker_state, "Running": s.running,
            "Paused": s.state is status.State.PAUSED,
            "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": s.pid,
            "ExitCode": c.exit_status if exited and c.exit_status is not None else 0,
            "Error": c.error,
            "StartedAt": rfc3339(c.started),
            "FinishedAt": rfc3339(c.finished) if exited else ZERO_TIME,
        },
        "Image": c.image_id,
        "Name": "/" + c.name,
        "RestartCount": c.restart_count,
        "Platform": "linux",
        "Config": {
            "Hostname": cfg.hostname, "User": cfg.user, "Tty": cfg.tty,
            "OpenStdin": cfg.open_stdin, "Env": list(cfg.env), "Cmd": list(cfg.cmd or c.command),
            "Image": c.image, "WorkingDir": cfg.workdir,
            "Entrypoint": list(cfg.entrypoint) if cfg.entrypoint else None,
        },
        "HostConfig": {
            "NanoCpus": cfg.cpus * 10**9, "Memory": cfg.memory_mib << 20,
            "AutoRemove": c.remove, "Privileged": cfg.privileged,
            "RestartPolicy": _restart_policy(cfg.restart),
            "CapAdd": [f"CAP_{n}" for n in cfg.cap_add] or None,
            "CapDrop": [f"CAP_{n}" for n in cfg.cap_drop] or None,
            "NetworkMode": cfg.network or "none",
            "PortBindings": network.docker_ports(network.ports_of(cfg.ports)),
            "Dns": list(cfg.dns), "DnsSearch": list(cfg.dns_search),
            "ExtraHosts": list(cfg.extra_hosts) or None,
            **mounts.docker_host_config(mounts.of_records(cfg.mounts)),
        },
        "NetworkSettings": _network_settings(s),
        "Mounts": mounts.docker_mounts(mounts.of_records(cfg.mounts), volumes.root(store)),
        "Hyperrun": {
            "URI": cfg.uri, "Domain": c.domain, "DomainUUID": c.domain_uuid,
            "Accelerator": cfg.accel, "Kernel": cfg.kernel, "Initrd": cfg.initrd,
            "Overlay": str(files.overlay), "BaseDisk": cfg.base_disk,
            "ConsoleLog": str(files.console_log), "OwnerPid": c.owner_pid,
        },
    }


def _network_settings(s: status.Status) -> dict[str, Any]:
    """As docker: the ports and addresses of a running container; nothing once it stopped."""
    cfg = s.container.settings
    if not s.running:
        return {"Ports": {}, "IPAddress": "", "Gateway": ""}
    user = cfg.network == "user"
    return {"Ports": network.docker_ports(network.ports_of(cfg.ports)),
            "IPAddress": network.GUEST_IP if user else "",
            "Gateway": network.GATEWAY if user else ""}


def _restart_policy(text: str) -> dict[str, Any]:
    name, retries = restart.parse_policy(text or "no")
    return {"Name": name, "MaximumRetryCount": retries}


def image_doc(image: Image) -> dict[str, Any]:
    cfg = image.config

    def strings(value: tuple[str, ...] | None) -> list[str] | None:
        return None if value is None else list(value)

    repos = sorted({ref.familiar_name for ref in image.references})
    return {
        "Id": image.id,
        "RepoTags": [f"{ref.familiar_name}:{ref.tag}" for ref in image.references if ref.tag],
        "RepoDigests": [f"{repo}@{image.manifest_digest}" for repo in repos],
        "Created": image.created or ZERO_TIME,
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size,
        "Config": {
            "Cmd": strings(cfg.cmd), "Entrypoint": strings(cfg.entrypoint),
            "Env": strings(cfg.env), "WorkingDir": cfg.working_dir or "", "User": cfg.user or "",
            # As docker: only an image that exposes ports has the key.
            **({} if cfg.exposed_ports is None
               else {"ExposedPorts": {str(p): {} for p in cfg.exposed_ports}}),
        },
        "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in image.layers]},
    }


class _Finder:
    """Resolves NAME|ID as docker does: a container first, then an image."""

    def __init__(self, store: Store, kind: str | None, uri: str) -> None:
        self.store, self.kind, self.uri = store, kind, uri
        self.conn: libvirt.virConnect | None = None

    def find(self, ref: str) -> dict[str, Any]:
        if self.kind in (None, "container"):
            try:
                return container_doc(self._status(records.find(self.store, ref)), self.store)
            except ContainerNotFound:
                pass  # then perhaps an image
        if self.kind in (None, "image"):
            image = self._image(ref)
            if image is not None:
                return image_doc(image)
        raise NoSuchObject(ref, self.kind)

    def _status(self, c: records.Container) -> status.Status:
        if c.exit_status is not None:  # libvirt has nothing to add about an exited one
            return status.Status(c, status.State.EXITED, 0, False)
        if self.conn is None:
            self.conn = hypervisor.connect(self.uri)
        return status.of(self.conn, self.store, c)

    def _image(self, ref: str) -> Image | None:
        # Text that is neither a reference nor an id cannot name an image: not found,
        # rather than a complaint about reference syntax (it may have meant a container).
        try:
            references.parse(ref)
        except UsageError:
            if not _IMAGE_ID_RE.fullmatch(ref):
                return None
        try:
            return ImageStore(self.store).get(ref)
        except ImageNotFound:
            return None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def inspect(args: argparse.Namespace, store: Store) -> int:
    template = Template.parse(args.format) if args.format else None
    finder = _Finder(store, args.type, hypervisor.uri_from_env(args.connect))
    found: list[dict[str, Any]] = []
    failures: list[HyperrunError] = []
    try:
        for ref in args.names:
            try:
                found.append(finder.find(ref))
            except HyperrunError as exc:
                failures.append(exc)
    finally:
        finder.close()
    if template is None:
        print(json.dumps(found, indent=4))
    else:
        for doc in found:
            print(template.render(doc))
    # As docker: what was found is printed, then one line for each name that was not.
    for failure in failures[:-1]:
        log.error(failure.message, failure.hint)
    if failures:
        raise failures[-1]
    return 0
