"""Pools without VMs: which runs a pool serves, the claim, the sweep, and the CLI's errors.

The VMs themselves are tested in test_pool_vm.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import libvirt
import pytest
from cli_store import hyperrun, ok, one_line_error

from hyperrun.bench import warm
from hyperrun.bench.boot import BootBench
from hyperrun.containers import names, pool, pool_vms
from hyperrun.errors import EXIT_USAGE, UsageError
from hyperrun.spec import NetworkSpec, PortMapping, RunSpec
from hyperrun.store import Store

TEST_URI = "test:///default"
KEY = pool.PoolKey("sha256:" + "a" * 64, 1, 128, "user", "tcg", TEST_URI)


@pytest.fixture
def pstore(store: Store) -> Store:
    """A store with stand-in boot files and a pool of KEY configured."""
    for name in ("vmlinuz", "initrd.img", "hyperrun-monitor"):
        (store.boot / name).write_bytes(b"x")
    pool.set_pool(store, pool.Pool(KEY, "busybox", 2))
    return store


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, check=True, text=True)
    return int(proc.stdout)


def _vm(store: Store, ready: bool, filler: int, key: pool.PoolKey = KEY) -> Path:
    """A pooled VM's directory and vm.json, with no domain behind it."""
    vm = pool.PooledVm(names.new_id(), key, "00000000-0000-4000-8000-000000000001",
                       pool_vms.assets_tag(store), filler, time.time(), ready=ready)
    directory = pool.vms_dir(store) / vm.id
    directory.mkdir(parents=True)
    pool.write_vm(store, vm)
    return directory


# -- which runs a pool can serve --------------------------------------------------------------

def test_a_plain_run_is_servable() -> None:
    assert pool.servable(RunSpec(image="busybox", command=("true",), env=("A=1",),
                                 name="web", hostname="h", remove=True, detach=True,
                                 cpus=2, memory_mib=128,
                                 network=NetworkSpec(ports=(PortMapping("127.0.0.1", 0, 80),))))


@pytest.mark.parametrize("change", [
    {"restart": "always"},
    {"log_max_size": 1 << 20},
    {"kernel": Path("/boot/vmlinuz")},
])
def test_what_shapes_the_vm_or_its_monitor_boots_cold(change: dict) -> None:
    assert not pool.servable(replace(RunSpec(image="busybox"), **change))


def test_the_key_is_image_cpus_memory_network_accel_uri() -> None:
    run = RunSpec(image="busybox", cpus=1, memory_mib=128)
    assert pool.key_of(run, KEY.image_id, "tcg", TEST_URI) == KEY
    assert pool.key_of(replace(run, memory_mib=256), KEY.image_id, "tcg", TEST_URI) != KEY


# -- the pools --------------------------------------------------------------------------------

def test_pools_are_set_resized_and_removed(pstore: Store) -> None:
    other = replace(KEY, memory_mib=256)
    pool.set_pool(pstore, pool.Pool(other, "busybox", 1))
    pool.set_pool(pstore, pool.Pool(KEY, "busybox", 3))
    assert {(p.key, p.size) for p in pool.pools(pstore)} == {(KEY, 3), (other, 1)}
    assert pool.remove_pools(pstore, lambda p: p.key == KEY) == [pool.Pool(KEY, "busybox", 3)]
    pool.remove_pools(pstore, lambda p: True)
    assert pool.pools(pstore) == []
    assert not (pstore.pool / "pools.json").exists()  # `run` then does not even look


@pytest.mark.parametrize("size", [0, pool.SIZE_MAX + 1])
def test_a_pool_size_out_of_bounds_is_refused(pstore: Store, size: int) -> None:
    with pytest.raises(UsageError):
        pool.set_pool(pstore, pool.Pool(KEY, "busybox", size))


def test_a_malformed_pools_file_is_an_error(pstore: Store) -> None:
    (pstore.pool / "pools.json").write_text("[{")
    with pytest.raises(UsageError, match="cannot be read"):
        pool.pools(pstore)


# -- the claim --------------------------------------------------------------------------------

def _claim_in_child(directory: str) -> bool:
    return pool.claim_dir(Path(directory))


def test_only_one_of_many_processes_claims_a_vm(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(8) as workers:
        won = workers.map(_claim_in_child, [str(tmp_path)] * 16)
    assert won.count(True) == 1
    assert pool.claimer(tmp_path) > 0
    assert [p.name for p in tmp_path.iterdir()] == ["claim"]  # no temporaries left


def test_take_without_a_pool_does_not_look(store: Store) -> None:
    conn = libvirt.open(TEST_URI)
    try:
        assert pool.take(conn, store, KEY, "") is None
    finally:
        conn.close()


def test_take_passes_over_vms_that_do_not_fit_or_died(pstore: Store) -> None:
    booting = _vm(pstore, ready=False, filler=os.getpid())
    other = _vm(pstore, ready=True, filler=os.getpid(), key=replace(KEY, cpus=2))
    dead = _vm(pstore, ready=True, filler=os.getpid())  # no domain behind it
    conn = libvirt.open(TEST_URI)
    try:
        assert pool.take(conn, pstore, KEY, pool_vms.assets_tag(pstore)) is None
    finally:
        conn.close()
    assert not pool.is_claimed(booting) and not pool.is_claimed(other)
    assert pool.claimer(dead) == os.getpid()  # left claimed by us, for the sweep


def test_a_vm_is_given_back_when_the_run_fails_before_adopting_it(pstore: Store) -> None:
    directory = _vm(pstore, ready=True, filler=os.getpid())
    assert pool.claim_dir(directory)
    vm = pool.read_vm(directory)
    assert vm is not None
    with pytest.raises(RuntimeError), pool.given_back_on_error(
            pool.Claimed(vm, directory, None)):  # type: ignore[arg-type]
        raise RuntimeError
    assert not pool.is_claimed(directory)


# -- the sweep --------------------------------------------------------------------------------

def test_the_sweep_keeps_live_work_and_removes_the_rest(pstore: Store) -> None:
    booting = _vm(pstore, ready=False, filler=os.getpid())
    orphan = _vm(pstore, ready=False, filler=_dead_pid())
    claimed_dead = _vm(pstore, ready=True, filler=os.getpid())
    (claimed_dead / "claim").write_text(str(_dead_pid()))
    claimed_live = _vm(pstore, ready=True, filler=os.getpid())
    (claimed_live / "claim").write_text(str(os.getpid()))
    died = _vm(pstore, ready=True, filler=os.getpid())
    unreadable = pool.vms_dir(pstore) / names.new_id()
    unreadable.mkdir()
    with pool_vms.Connections() as conns:
        kept = pool_vms.sweep(conns, pstore)
    assert kept == {KEY: 1}
    left = {d.name for d in pool.vms_dir(pstore).iterdir()}
    assert left == {booting.name, claimed_live.name}
    for gone in (orphan, claimed_dead, died, unreadable):
        assert gone.name not in left


def test_vms_beyond_what_the_pools_want_are_swept(pstore: Store) -> None:
    pool.remove_pools(pstore, lambda p: True)
    _vm(pstore, ready=False, filler=os.getpid())
    with pool_vms.Connections() as conns:
        assert pool_vms.sweep(conns, pstore) == {KEY: 1}  # still booting: its booter decides
    vm = pool.read_vm(next(pool.vms_dir(pstore).iterdir()))
    assert vm is not None
    pool.write_vm(pstore, replace(vm, ready=True))
    with pool_vms.Connections() as conns:
        assert pool_vms.sweep(conns, pstore) == {}
    assert list(pool.vms_dir(pstore).iterdir()) == []


def test_vm_json_round_trips(pstore: Store) -> None:
    directory = _vm(pstore, ready=True, filler=1)
    vm = pool.read_vm(directory)
    assert vm is not None and vm.key == KEY
    assert json.loads((directory / "vm.json").read_text()) == asdict(vm)


# -- the command line -------------------------------------------------------------------------

def test_pool_ls_on_a_store_without_pools(tmp_path: Path) -> None:
    assert ok(hyperrun(tmp_path, "pool", "ls")).split() == [
        "IMAGE", "IMAGE", "ID", "CPUS", "MEMORY", "NETWORK", "ACCEL", "SIZE", "READY",
        "BOOTING"]


@pytest.mark.parametrize("args, words", [
    (("pool", "rm"), ("give an image or --all",)),
    (("pool", "rm", "busybox", "--all"), ("give an image or --all",)),
    (("pool", "rm", "nothing"), ("no pool of 'nothing'",)),
    (("pool", "add"), ("IMAGE",)),
    (("pool", "add", "busybox", "--network", "host"), ("--network",)),
    (("bench", "boot", "--warm", "--parallel", "2"), ("--warm runs one at a time",)),
])
def test_pool_usage_errors(tmp_path: Path, args: tuple[str, ...], words: tuple[str, ...]) -> None:
    one_line_error(hyperrun(tmp_path, *args), EXIT_USAGE, *words)


def test_a_cold_bench_refuses_a_store_whose_pool_would_serve_it(store: Store) -> None:
    bench = BootBench(image="busybox", memory_mib=128, uri=TEST_URI)
    pool.set_pool(store, pool.Pool(warm._key(bench, store, KEY.image_id), "busybox", 1))
    with pytest.raises(UsageError, match="would serve these runs warm"), \
            warm.pool_for(bench, store, KEY.image_id):
        pass
    with warm.pool_for(bench, store, "sha256:" + "b" * 64):  # another image: no pool
        pass
