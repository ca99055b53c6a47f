"""-v, --mount and --tmpfs: docker's three ways of asking for a mount, parsed into Mounts.

Everything here runs before any VM boots, so a bad mount is one line and status 125.
Records keep the mounts as JSON strings (`record` / `from_record`), so `start` and
`restart` boot with the same volumes and `inspect` shows them.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hyperrun.errors import UsageError
from hyperrun.spec import Mount, MountType

# docker's rule for volume names (at least two characters), bounded.
VOLUME_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,127}")
VOLUME_NAME_HINT = ("a volume name is 2 to 128 letters, digits, '_', '.' or '-', starting "
                    "with a letter or digit; a host directory must be an absolute path")
MAX_MOUNTS = 16  # each host directory is one PCI device of the VM
PATH_MAX = 4095  # the guest's limit for a target, and a sane one for a host source
TMPFS_SIZE_MAX = 1 << 40
_SIZE_RE = re.compile(r"(\d{1,15})([kmg]?)b?", re.ASCII)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _bad(what: str, text: str, hint: str) -> UsageError:
    return UsageError(f"invalid {what} {text[:200]!r}", hint=hint)


def _target(text: str, what: str, spec: str) -> str:
    """An absolute container path, cleaned as docker cleans it; never `/` itself."""
    hint = "the target must be an absolute path inside the container, such as /data"
    if not text.startswith("/"):
        raise UsageError(f"invalid {what} {spec[:200]!r}: the target {text[:200]!r} is not "
                         "an absolute path", hint=hint)
    if "\0" in text or len(text.encode()) > PATH_MAX or any(ord(ch) < 32 for ch in text):
        raise _bad(what, spec, hint + " (no control characters, at most 4095 bytes)")
    clean = posixpath.normpath(text)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    if clean == "/":
        raise UsageError(f"invalid {what} {spec[:200]!r}: the target cannot be '/'",
                         hint="mount a volume on a directory below /, such as /data")
    return clean


def _host_dir(text: str, what: str, spec: str) -> str:
    if "\0" in text or len(text.encode()) > PATH_MAX:
        raise _bad(what, spec, "give an absolute host path of at most 4095 bytes")
    return posixpath.normpath(text).replace("//", "/", 1)


def _volume_name(text: str, what: str, spec: str) -> str:
    if not VOLUME_NAME_RE.fullmatch(text):
        raise UsageError(f"invalid {what} {spec[:200]!r}: {text[:200]!r} is neither an "
                         "absolute host path nor a volume name", hint=VOLUME_NAME_HINT)
    return text


def _size(text: str, what: str, spec: str) -> int:
    found = _SIZE_RE.fullmatch(text.strip().lower())
    size = int(found[1]) * _SIZE_UNITS[found[2]] if found else 0
    if not 1 <= size <= TMPFS_SIZE_MAX:
        raise _bad(what, spec, "size is bytes with an optional k, m or g, e.g. size=64m")
    return size


def _mode(text: str, what: str, spec: str) -> int:
    if not re.fullmatch(r"[0-7]{1,4}", text, re.ASCII):
        raise _bad(what, spec, "mode is octal permission bits, e.g. mode=1777")
    return int(text, 8)


def parse_volume(spec: str) -> Mount:
    """-v [SOURCE:]TARGET[:OPTIONS]: a bind mount, a named volume or an anonymous one."""
    what = "-v/--volume"
    parts = spec.split(":")
    if len(parts) == 1:
        return Mount(MountType.VOLUME, _target(parts[0], what, spec), anonymous=True)
    if len(parts) > 3 or not parts[0]:
        raise _bad(what, spec, "use -v HOST_DIR:CONTAINER_DIR[:ro], -v NAME:CONTAINER_DIR "
                               "or -v CONTAINER_DIR")
    source, target = parts[0], _target(parts[1], what, spec)
    options = parts[2].split(",") if len(parts) == 3 else []
    for option in options:
        if option not in ("ro", "rw") and (option != "nocopy" or source.startswith("/")):
            raise _bad(what, spec, "the options are ro or rw (and nocopy for a named volume)")
    readonly = "ro" in options
    if source.startswith("/"):
        return Mount(MountType.BIND, target, _host_dir(source, what, spec), readonly)
    if source.startswith(".") or "/" in source:
        raise UsageError(f"invalid {what} {spec[:200]!r}: the host path {source[:200]!r} is "
                         "relative", hint="give the host directory as an absolute path, "
                                          "e.g. -v \"$PWD/data:/data\"")
    return Mount(MountType.VOLUME, target, _volume_name(source, what, spec), readonly,
                 nocopy="nocopy" in options)


_MOUNT_KEYS = {"type": "type", "source": "source", "src": "source", "target": "target",
               "destination": "target", "dst": "target", "readonly": "readonly",
               "ro": "readonly", "volume-nocopy": "nocopy", "tmpfs-size": "size",
               "tmpfs-mode": "mode"}
_TRUE = {"": True, "1": True, "true": True, "0": False, "false": False}


def parse_mount(spec: str) -> Mount:
    """--mount type=bind|volume|tmpfs,source=...,target=...[,readonly]: docker's syntax."""
    what = "--mount"
    hint = ("use --mount type=bind|volume|tmpfs,source=SRC,target=DST[,readonly]; keys: "
            + ", ".join(sorted(_MOUNT_KEYS)))
    fields: dict[str, str] = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        name = _MOUNT_KEYS.get(key.strip().lower())
        if name is None or name in fields:
            raise UsageError(f"invalid --mount {spec[:200]!r}: "
                             f"{'repeated' if name else 'unknown'} key {key[:60]!r}", hint=hint)
        if not eq and name not in ("readonly", "nocopy"):
            raise _bad(what, spec, hint)
        fields[name] = value
    kind = fields.get("type", "volume")
    if kind not in {t.value for t in MountType}:
        raise UsageError(f"invalid --mount {spec[:200]!r}: unknown type {kind[:60]!r}", hint=hint)
    if "target" not in fields:
        raise UsageError(f"invalid --mount {spec[:200]!r}: no target", hint=hint)
    target = _target(fields["target"], what, spec)
    flags = {}
    for name in ("readonly", "nocopy"):
        value = fields.get(name, "0").lower()
        if value not in _TRUE:
            raise _bad(what, spec, f"{name} takes true or false")
        flags[name] = _TRUE[value]
    source = fields.get("source", "")
    if kind == MountType.TMPFS:
        if source or flags["nocopy"]:
            raise _bad(what, spec, "a tmpfs mount has no source")
        return Mount(MountType.TMPFS, target, readonly=flags["readonly"],
                     tmpfs_size=_size(fields["size"], what, spec) if "size" in fields else 0,
                     tmpfs_mode=_mode(fields["mode"], what, spec) if "mode" in fields
                     else 0o1777)
    if "size" in fields or "mode" in fields:
        raise _bad(what, spec, "tmpfs-size and tmpfs-mode are for type=tmpfs")
    if kind == MountType.BIND:
        if not source.startswith("/") or flags["nocopy"]:
            raise UsageError(f"invalid --mount {spec[:200]!r}: a bind mount needs an absolute "
                             "source path", hint="e.g. --mount type=bind,src=/srv/data,dst=/data")
        return Mount(MountType.BIND, target, _host_dir(source, what, spec), flags["readonly"])
    if not source:
        return Mount(MountType.VOLUME, target, readonly=flags["readonly"], anonymous=True,
                     nocopy=flags["nocopy"])
    return Mount(MountType.VOLUME, target, _volume_name(source, what, spec), flags["readonly"],
                 nocopy=flags["nocopy"])


def parse_tmpfs(spec: str) -> Mount:
    """--tmpfs PATH[:size=N,mode=OCTAL,ro|rw]."""
    what = "--tmpfs"
    path, _, options = spec.partition(":")
    target = _target(path, what, spec)
    size, mode, readonly = 0, 0o1777, False
    for option in options.split(",") if options else []:
        key, _, value = option.partition("=")
        if key == "size":
            size = _size(value, what, spec)
        elif key == "mode":
            mode = _mode(value, what, spec)
        elif option in ("ro", "rw"):
            readonly = option == "ro"
        else:
            raise _bad(what, spec, "use --tmpfs PATH[:size=SIZE,mode=OCTAL,ro]")
    return Mount(MountType.TMPFS, target, readonly=readonly, tmpfs_size=size, tmpfs_mode=mode)


def parse_all(volumes: Iterable[str], mounts: Iterable[str],
              tmpfs: Iterable[str]) -> tuple[Mount, ...]:
    """Every mount of the command line, checked together: no target twice, not too many."""
    out = ([parse_volume(v) for v in volumes] + [parse_mount(m) for m in mounts]
           + [parse_tmpfs(t) for t in tmpfs])
    seen: set[str] = set()
    for m in out:
        if m.target in seen:
            raise UsageError(f"duplicate mount point: {m.target[:200]}",
                             hint="give each -v, --mount and --tmpfs its own target")
        seen.add(m.target)
    if len(out) > MAX_MOUNTS:
        raise UsageError(f"{len(out)} mounts; a container can have at most {MAX_MOUNTS}",
                         hint="share a parent directory instead of many of its children")
    return tuple(out)


def check_bind_sources(mounts: Iterable[Mount]) -> None:
    """A bind source must be a directory; a missing one is created, as `docker run -v` does.

    Only directories: the VM's file servers export directory trees, not single files.
    """
    for m in mounts:
        if m.type is not MountType.BIND:
            continue
        path = Path(m.source)
        try:
            if not path.exists():
                path.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the bind mount source {m.source[:200]}: "
                             f"{exc.strerror}", hint="give an existing directory") from None
        if not path.is_dir():
            raise UsageError(f"the bind mount source {m.source[:200]} is not a directory",
                             hint="only directories can be shared with a VM; mount the "
                                  "directory that holds the file")


def record(m: Mount) -> str:
    """A mount as the container's record keeps it."""
    return json.dumps({"type": str(m.type), "target": m.target, "source": m.source,
                       "readonly": m.readonly, "anonymous": m.anonymous, "nocopy": m.nocopy,
                       "size": m.tmpfs_size, "mode": m.tmpfs_mode}, sort_keys=True)


def from_record(text: str) -> Mount:
    data: dict[str, Any] = json.loads(text)
    return Mount(MountType(data["type"]), str(data["target"]), str(data["source"]),
                 bool(data["readonly"]), bool(data["anonymous"]), int(data["size"]),
                 int(data["mode"]), bool(data.get("nocopy", False)))


def of_records(texts: Iterable[str]) -> tuple[Mount, ...]:
    return tuple(from_record(t) for t in texts)


def docker_mounts(mounts: Iterable[Mount], volume_dir: Path) -> list[dict[str, Any]]:
    """`inspect`'s Mounts, as docker shows them (tmpfs mounts are not listed there)."""
    out: list[dict[str, Any]] = []
    for m in mounts:
        if m.type is MountType.TMPFS:
            continue
        entry: dict[str, Any] = {"Type": str(m.type)}
        if m.type is MountType.VOLUME:
            entry |= {"Name": m.source, "Source": str(volume_dir / m.source / "_data"),
                      "Driver": "local"}
        else:
            entry["Source"] = m.source
        volume = m.type is MountType.VOLUME
        entry |= {"Destination": m.target,
                  "Mode": "ro" if m.readonly else "z" if volume else "",
                  "RW": not m.readonly, "Propagation": "" if volume else "rprivate"}
        out.append(entry)
    return out


def docker_host_config(mounts: Iterable[Mount]) -> dict[str, Any]:
    """`inspect`'s HostConfig.Binds and HostConfig.Tmpfs, in docker's forms."""
    binds = [f"{m.source}:{m.target}" + (":ro" if m.readonly else "") for m in mounts
             if m.type is not MountType.TMPFS and not m.anonymous]
    tmpfs = {m.target: ",".join(([f"size={m.tmpfs_size}"] if m.tmpfs_size else [])
                                + [f"mode={m.tmpfs_mode:o}"] + (["ro"] if m.readonly else []))
             for m in mounts if m.type is MountType.TMPFS}
    return {"Binds": binds or None, "Tmpfs": tmpfs or None}
