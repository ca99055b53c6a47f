"""`hyperrun pool add|ls|rm`: VMs booted ahead so that `run` starts warm (containers/pool.py)."""

from __future__ import annotations

import argparse
import collections
import sys

from hyperrun import config
from hyperrun.cli.run import parse_cpus, parse_memory
from hyperrun.cli.table import format_table
from hyperrun.containers import pool, pool_vms
from hyperrun.errors import ImageNotFound, UsageError
from hyperrun.images.store import ImageStore
from hyperrun.log import escape
from hyperrun.spec import Accel, NetworkMode
from hyperrun.store import Store
from hyperrun.vm import accel as accel_mod
from hyperrun.vm import hypervisor


def register(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = verbs.add_parser(
        "pool", help="keep VMs booted ahead so that `run` starts warm",
        description="A pool keeps VMs of one image booted up to the point where they wait "
                    "for a container's spec. A `run` of that image with the pool's vCPUs, "
                    "memory, network mode and accelerator takes one (and a replacement boots "
                    "in the background); any other run boots cold, as without a pool. Each "
                    "pooled VM costs host memory while it waits.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    add = actions.add_parser("add", help="add a pool (or resize one) and boot its VMs",
                             description="Add a pool of IMAGE, or set the size of the pool "
                                         "with the same settings, and boot its VMs now.")
    add.add_argument("image", metavar="IMAGE")
    add.add_argument("--size", type=int, default=1,
                     help=f"VMs to keep ready (1 to {pool.SIZE_MAX}, default 1)")
    add.add_argument("--cpus", help="virtual CPUs, as `run --cpus` (default: as `run`)")
    add.add_argument("--memory", "-m", help="guest RAM, as `run --memory` (default: as `run`)")
    add.add_argument("--network", default="user", choices=[m.value for m in NetworkMode],
                     help="the network mode of the runs it serves (default user)")
    add.add_argument("--accel", choices=[a.value for a in Accel],
                     help="kvm, tcg or auto (default: as `run`)")
    add.add_argument("--connect", help="libvirt URI (default $HYPERRUN_CONNECT or "
                                       "qemu:///system)")
    add.set_defaults(func=_add)
    ls = actions.add_parser("ls", help="list the pools and their VMs")
    ls.set_defaults(func=_ls)
    rm = actions.add_parser("rm", help="remove pools and destroy their VMs")
    rm.add_argument("image", metavar="IMAGE", nargs="?", help="the image whose pools go")
    rm.add_argument("--all", action="store_true", help="remove every pool")
    rm.set_defaults(func=_rm)


def to_pool(args: argparse.Namespace, store: Store) -> pool.Pool:
    """The pool `pool add` describes: settings as `run` would resolve them."""
    defaults = config.load()
    image = ImageStore(store).get(args.image)
    accel = accel_mod.resolve(Accel(args.accel or defaults.accel or Accel.AUTO.value),
                              once=store.root / "tcg-warned")
    key = pool.PoolKey(image.id, parse_cpus(args.cpus or defaults.cpus or "1"),
                       parse_memory(args.memory or defaults.memory or "512m"),
                       args.network, accel.value, hypervisor.uri_from_env(args.connect))
    return pool.Pool(key, args.image, args.size)


def _add(args: argparse.Namespace, store: Store) -> int:
    p = to_pool(args, store)
    pool.set_pool(store, p)
    pool_vms.fill(store)
    return 0


def _ls(args: argparse.Namespace, store: Store) -> int:
    with pool_vms.Connections() as conns:
        ready = pool_vms.sweep(conns, store)
    booting: collections.Counter[pool.PoolKey] = collections.Counter(
        vm.key for _, vm in pool.listed(store) if vm is not None and not vm.ready)
    rows = [["IMAGE", "IMAGE ID", "CPUS", "MEMORY", "NETWORK", "ACCEL", "SIZE", "READY",
             "BOOTING"]]
    for p in pool.pools(store):
        k = p.key
        rows.append([escape(p.image), k.image_id.removeprefix("sha256:")[:12], str(k.cpus),
                     f"{k.memory_mib}MiB", k.network, k.accel, str(p.size),
                     str(ready[k] - booting[k]), str(booting[k])])
    sys.stdout.write(format_table(rows))
    return 0


def _rm(args: argparse.Namespace, store: Store) -> int:
    if args.all == (args.image is not None):
        raise UsageError("give an image or --all", hint="see `hyperrun pool ls`")
    image_id = _pool_image(store, args.image) if args.image is not None else None
    pool.remove_pools(store, lambda p: image_id is None or p.key.image_id == image_id)
    with pool_vms.Connections() as conns:
        pool_vms.sweep(conns, store, wait=True)
    return 0


def _pool_image(store: Store, ref: str) -> str:
    """The image id of the pools `ref` names: an image, or a pool's reference as added."""
    try:
        image_id = ImageStore(store).get(ref).id
    except ImageNotFound:
        image_id = ""
    for p in pool.pools(store):
        if p.key.image_id == image_id or p.image == ref:
            return p.key.image_id
    raise UsageError(f"no pool of {ref!r}", hint="see `hyperrun pool ls`")
