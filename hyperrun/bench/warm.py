"""`hyperrun bench boot --warm`: every measured run takes a VM from a pool.

The bench makes the pool its runs need (size 1) unless the store has one, and removes
what it made at the end. Before each run it waits, untimed, until the pool is full
again, as it waits for the previous VM to go: a run measures a claim, not a refill.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hyperrun.containers import pool, pool_vms
from hyperrun.errors import UsageError
from hyperrun.spec import NetworkMode
from hyperrun.store import Store
from hyperrun.vm import accel as accel_mod

if TYPE_CHECKING:
    from hyperrun.bench.boot import BootBench


def _key(bench: BootBench, store: Store, image_id: str) -> pool.PoolKey:
    accel = accel_mod.resolve(bench.accel, once=store.root / "tcg-warned")
    # The runs are `run --rm IMAGE true`, on run's default network.
    return pool.PoolKey(image_id, bench.cpus, bench.memory_mib, NetworkMode.USER.value,
                        accel.value, bench.uri)


@contextlib.contextmanager
def pool_for(bench: BootBench, store: Store, image_id: str) -> Iterator[None]:
    """The pool the bench's runs take from, while they run (none without --warm).

    Without --warm a pool that would serve the runs is an error: they would not be cold.
    """
    key = _key(bench, store, image_id)
    made = all(p.key != key for p in pool.pools(store))
    if not bench.warm:
        if not made:
            raise UsageError(f"a pool of {bench.image} would serve these runs warm",
                             hint=f"add --warm, or `hyperrun pool rm {bench.image}` first")
        yield
        return
    if made:
        pool.set_pool(store, pool.Pool(key, bench.image, 1))
    try:
        yield
    finally:
        if made:
            pool.remove_pools(store, lambda p: p.key == key)
            with pool_vms.Connections() as conns:
                pool_vms.sweep(conns, store)


def refilled(bench: BootBench, store: Store) -> None:
    """Wait until the pools are full (a refill helper may be booting): untimed."""
    if bench.warm:
        pool_vms.fill(store)
