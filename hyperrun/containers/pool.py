"""Pools of VMs booted ahead of `run`: a warm start without a daemon (Kata's VM cache).

A pool is configured per store (`hyperrun pool add`): an image and the settings a VM is
booted with (vCPUs, memory, network mode, accelerator, libvirt URI). A pooled VM is a
container booted up to the point where its agent waits for `CONTAINER`: its own id,
overlay on the image's base disk, domain (named and tagged as every container's, left to
libvirt) and monitor. `run` takes one by linking `claim` into its directory (link() is
atomic and exclusive), so two runs never get the same VM; the container's record then
adopts the directory (records.create moves it into containers/), and the spec goes to
the waiting agent. pool_vms.py boots and sweeps them.

    pool/pools.json       the pools: [{key: {image_id, cpus, memory_mib, network, accel,
                          uri}, image, size}]
    pool/vms/<id>/        vm.json, the files of a container directory, `claim` once taken
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import libvirt

import hyperrun
from hyperrun.containers import records
from hyperrun.errors import UsageError
from hyperrun.log import log
from hyperrun.spec import DomainOwner, NetworkMode, RunSpec
from hyperrun.store import Store, atomic_write, process_alive
from hyperrun.subproc import spawn_detached
from hyperrun.vm import hypervisor, monitor

SIZE_MAX = 32
JSON_MAX = 1 << 20  # pools.json and vm.json are ours, but never read without a bound
# RunSpec fields that only shape what `CONTAINER` and `EXEC` carry (or, for -p, what is
# added to the running VM), so any pooled VM of the image can serve them. cpus,
# memory_mib, accel and network.mode are the pool's key; every other field (kernel, log
# options, restart policy, volumes, ...) must keep its default, or the run boots cold.
# A field added later is thus cold until listed here.
SERVABLE = frozenset({"image", "command", "entrypoint", "env", "workdir", "user", "hostname",
                      "name", "tty", "interactive", "remove", "detach", "pull", "quiet",
                      "capabilities", "network", "cpus", "memory_mib", "accel"})
_DEFAULT_RUN = RunSpec(image="")


@dataclass(frozen=True)
class PoolKey:
    """What a VM is booted with; a run is served only by a VM of its own key."""

    image_id: str
    cpus: int
    memory_mib: int
    network: str  # NetworkMode
    accel: str  # resolved: kvm or tcg
    uri: str


@dataclass(frozen=True)
class Pool:
    key: PoolKey
    image: str  # the reference as `pool add` was given it
    size: int


@dataclass(frozen=True)
class PooledVm:
    """vm.json: one VM booted (or booting) for a pool."""

    id: str
    key: PoolKey
    domain_uuid: str
    assets: str  # boot_assets_tag() of its kernel and initrd: a changed one retires it
    filler_pid: int  # the process booting it
    created: float
    monitor_pid: int = 0
    ready: bool = False  # its agent has opened its ports and waits for CONTAINER


@dataclass(frozen=True)
class Claimed:
    """A pooled VM taken by this process for one container."""

    vm: PooledVm
    dir: Path
    dom: libvirt.virDomain


def servable(run: RunSpec) -> bool:
    """Whether a pooled VM can serve run at all (its key aside): nothing may shape the VM
    or its monitor beyond the pool's key. Published ports are added to the running VM
    (hypervisor.forward_ports)."""
    return all(getattr(run, f.name) == getattr(_DEFAULT_RUN, f.name)
               for f in dataclasses.fields(RunSpec) if f.name not in SERVABLE)


def key_of(run: RunSpec, image_id: str, accel: str, uri: str) -> PoolKey:
    return PoolKey(image_id, run.cpus, run.memory_mib, str(run.network.mode), accel, uri)


def boot_assets_tag(*files: Path) -> str:
    """Which kernel, initrd and base disk a VM booted with: paths, sizes, change times."""
    parts = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            return ""
        parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


# -- the pools --------------------------------------------------------------------------------

def _pools_file(store: Store) -> Path:
    return store.pool / "pools.json"


def _read_json(path: Path) -> Any:
    with path.open("rb") as f:
        data = f.read(JSON_MAX + 1)
    if len(data) > JSON_MAX:
        raise ValueError(f"{path} is larger than {JSON_MAX} bytes")
    return json.loads(data)


def _key(data: dict[str, Any]) -> PoolKey:
    return PoolKey(str(data["image_id"]), int(data["cpus"]), int(data["memory_mib"]),
                   str(NetworkMode(data["network"])), str(data["accel"]), str(data["uri"]))


def pools(store: Store) -> list[Pool]:
    """The configured pools; none when the file is missing."""
    path = _pools_file(store)
    try:
        data = _read_json(path)
        return [Pool(_key(p["key"]), str(p["image"]), int(p["size"])) for p in data]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{path} cannot be read: {exc}",
                         hint=f"remove {path} and add the pools again") from None


def set_pool(store: Store, pool: Pool) -> None:
    """Add pool, or change the size of the one with its key."""
    if not 1 <= pool.size <= SIZE_MAX:
        raise UsageError(f"invalid pool size {pool.size}", hint=f"give 1 to {SIZE_MAX}")
    with store.lock("pool"):
        kept = [p for p in pools(store) if p.key != pool.key]
        _save_pools(store, [*kept, pool])


def remove_pools(store: Store, match: Callable[[Pool], bool]) -> list[Pool]:
    """Forget the pools that match; the ones removed. Their VMs are destroyed by the
    next sweep (pool_vms.sweep)."""
    with store.lock("pool"):
        current = pools(store)
        gone = [p for p in current if match(p)]
        if gone:
            _save_pools(store, [p for p in current if p not in gone])
    return gone


def _save_pools(store: Store, found: list[Pool]) -> None:
    store.pool.mkdir(mode=0o711, exist_ok=True)
    if not found:
        _pools_file(store).unlink(missing_ok=True)  # no pool: `run` does not even look
        return
    atomic_write(_pools_file(store), json.dumps([asdict(p) for p in found]).encode(),
                 mode=0o600)


# -- pooled VMs -------------------------------------------------------------------------------

def vms_dir(store: Store) -> Path:
    return store.pool / "vms"


def vm_paths(store: Store, vm_id: str) -> records.Paths:
    """A pooled VM's files: its sockets where its container's will be, its directory here."""
    return dataclasses.replace(records.paths(store, vm_id), dir=vms_dir(store) / vm_id)


def owner(store: Store, vm_id: str) -> DomainOwner:
    # The container it becomes has the same id, so its domain needs no change on claim.
    return DomainOwner(store.identity(), vm_id)


def read_vm(directory: Path) -> PooledVm | None:
    """The vm.json in directory; None if missing or unreadable (its booter may be writing)."""
    try:
        data = _read_json(directory / "vm.json")
        vm = PooledVm(**{**data, "key": _key(data["key"])})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return vm if vm.id == directory.name else None


def write_vm(store: Store, vm: PooledVm) -> None:
    atomic_write(vms_dir(store) / vm.id / "vm.json", json.dumps(asdict(vm)).encode(),
                 mode=0o600)


def listed(store: Store) -> list[tuple[Path, PooledVm | None]]:
    """Every pooled VM's directory with its vm.json, oldest first."""
    try:
        dirs = [d for d in vms_dir(store).iterdir() if d.is_dir() and not d.is_symlink()]
    except OSError:
        return []
    found = [(d, read_vm(d)) for d in dirs]
    return sorted(found, key=lambda e: e[1].created if e[1] else 0.0)


def claimer(directory: Path) -> int:
    """The pid in a pooled VM's claim file; 0 if it has none (or it is being written)."""
    try:
        text = (directory / "claim").read_text()
    except OSError:
        return 0
    return int(text) if text.strip().isdigit() else 0


def is_claimed(directory: Path) -> bool:
    return (directory / "claim").exists()


def usable(conn: libvirt.virConnect, store: Store, vm: PooledVm) -> libvirt.virDomain | None:
    """vm's domain if the VM and its monitor still run; None if it died waiting."""
    dom = hypervisor.owned_domain(conn, vm.domain_uuid, owner(store, vm.id))
    if dom is None or not hypervisor.is_active(dom) or hypervisor.is_paused(dom):
        return None
    if not monitor.alive(vm.monitor_pid, vm_paths(store, vm.id).mon_socket):
        return None
    return dom


def take(conn: libvirt.virConnect, store: Store, key: PoolKey, assets: str) -> Claimed | None:
    """Claim a ready VM of key that booted with assets; None if the pool has none.

    Without any pool configured this is one stat(): `run` pays nothing for the feature.
    """
    if not _pools_file(store).exists():
        return None
    dead = False
    for directory, vm in listed(store):
        if vm is None or not vm.ready or vm.key != key or vm.assets != assets:
            continue
        if not claim_dir(directory):
            continue  # another run's, or swept meanwhile
        dom = usable(conn, store, vm)
        if dom is None:  # it died waiting: left claimed by us, for the sweep (we live on)
            log.debug("pooled VM %s is gone; trying another", vm.id[:12])
            dead = True
            continue
        log.debug("claimed pooled VM %s", vm.id[:12])
        return Claimed(vm, directory, dom)
    log.debug("no pooled VM for %s; booting cold", key)
    if dead:  # the pool is short of it: a replacement boots beside this cold run
        spawn_refill(store)
    return None


def claim_dir(directory: Path) -> bool:
    """Create directory/claim holding our pid, unless it exists: link() is atomic and
    exclusive, so the file never exists without its pid and only one process wins."""
    mine = directory / f".claim.{os.getpid()}"
    try:
        fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
        os.link(mine, directory / "claim")
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            mine.unlink()
    return True


@contextlib.contextmanager
def given_back_on_error(claimed: Claimed | None) -> Iterator[None]:
    """Put a claimed VM back in its pool if the run fails before adopting it."""
    try:
        yield
    except BaseException:
        if claimed is not None and claimed.dir.is_dir():
            (claimed.dir / "claim").unlink(missing_ok=True)
        raise


def process_claimed(store: Store, directory: Path) -> bool:
    """Whether a live process holds the claim on a pooled VM (its run is adopting it)."""
    pid = claimer(directory)
    return bool(pid) and process_alive(pid)


# `python -I -c` has no path of ours; argv[1] says where the parent's hyperrun lives.
_BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
              "from hyperrun.containers.pool_vms import main; sys.exit(main(sys.argv[1:]))")


def spawn_refill(store: Store) -> None:
    """Boot replacements for claimed VMs in a detached helper (pool_vms.main), isolated as
    the reaper is: `python -I` in "/", hyperrun from where ours came from."""
    package_parent = Path(hyperrun.__file__).resolve().parent.parent
    spawn_detached([sys.executable, "-I", "-c", _BOOTSTRAP, str(package_parent),
                    str(store.root)])
