"""Container records without a VM: names, how references resolve, leftovers of killed runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hyperrun.containers import names, records
from hyperrun.errors import ContainerNotFound, UsageError
from hyperrun.store import Store


def _create(store: Store, name: str | None = None, cid: str | None = None,
            remove: bool = False) -> records.Container:
    return records.create(store, cid or names.new_id(), name, "busybox", "sha256:" + "0" * 64,
                          ("true",), remove=remove)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_full_id_wins_over_a_name_equal_to_it(store: Store) -> None:
    """`rm <id>` must never pick another container that was *named* like that id."""
    target = _create(store, cid="f" * 64)
    decoy = _create(store, cid="0" * 64, name=target.id)  # listed first
    assert records.find(store, target.id) == target
    assert records.find(store, target.id).id != decoy.id


def test_name_wins_over_an_id_prefix(store: Store) -> None:
    target = _create(store, name="target")
    named = _create(store, name=target.id[:12])
    assert records.find(store, target.id[:12]) == named  # docker: exact name before prefix
    assert records.find(store, target.id[:13]) == target


def test_unique_prefix_and_ambiguity(store: Store) -> None:
    a = _create(store, cid="ab" + "1" * 62)
    _create(store, cid="ab" + "2" * 62)
    assert records.find(store, "ab1") == a
    with pytest.raises(UsageError, match="ambiguous"):
        records.find(store, "ab")
    with pytest.raises(ContainerNotFound):
        records.find(store, "zz")
    with pytest.raises(ContainerNotFound):
        records.find(store, "")


@pytest.mark.parametrize("name", ["a/b", "x" * 129, "-a", "_a", ".a", "", "a b", "a\nb", "é"])
def test_invalid_names_are_refused(store: Store, name: str) -> None:
    with pytest.raises(UsageError, match="invalid container name"):
        _create(store, name=name)
    assert not any(store.containers.iterdir())


@pytest.mark.parametrize("name", ["a", "web-1", "my_app.v2", "X" * 128, "0abc"])
def test_valid_names(store: Store, name: str) -> None:
    assert _create(store, name=name).name == name


def test_domain_is_unique_to_store_and_container(tmp_path) -> None:
    one, two = Store(tmp_path / "one"), Store(tmp_path / "two")
    cid = names.new_id()
    a, b = _create(one, name="same", cid=cid), _create(two, name="same", cid=cid)
    assert one.identity() != two.identity()
    assert a.domain != b.domain and a.domain_uuid != b.domain_uuid
    assert "same" not in a.domain
    assert one.identity() == one.identity()  # made once, then kept


def test_record_is_private(store: Store) -> None:
    c = _create(store)
    p = records.paths(store, c.id)
    assert p.record.stat().st_mode & 0o777 == 0o600
    assert p.dir.stat().st_mode & 0o777 == 0o711  # QEMU traverses, nobody lists


def test_exit_is_not_recorded_into_a_removed_container(store: Store) -> None:
    c = _create(store)
    records.remove_files(store, c)
    records.record_exit(store, c, 137)
    assert not records.paths(store, c.id).dir.exists()


def test_a_status_the_owner_wrote_is_not_overwritten_as_lost(store: Store) -> None:
    """A reader that saw no status, then found the owner gone, raced with its last write."""
    c = _create(store)
    stale = c  # read before the owner recorded its exit and quit
    records.record_exit(store, c, 3)
    assert records.record_lost(store, stale, 137, "killed").exit_status == 3
    assert records.find(store, c.id).exit_status == 3
    fresh = _create(store)
    assert records.record_lost(store, fresh, 137, "killed").exit_status == 137


def test_sweep_removes_leftovers_of_killed_runs(store: Store) -> None:
    dead = _dead_pid()
    gone_rm = _create(store, remove=True)
    kept = _create(store)
    live = _create(store)
    for c in (gone_rm, kept):
        record = records.paths(store, c.id).record
        record.write_text(json.dumps({**json.loads(record.read_text()), "owner_pid": dead}))
    for c in (gone_rm, kept, live):
        for sock in (records.paths(store, c.id).ctl_socket, records.paths(store, c.id).io_socket):
            sock.touch()
    orphan = store.sockets / "0123456789ab.ctl"
    orphan.touch()
    records.sweep(store)
    left = {c.id for c in records.all_containers(store)}
    assert left == {kept.id, live.id}  # a kept container stays until `rm`
    assert sorted(p.name for p in store.sockets.iterdir()) == sorted(
        [f"{live.id[:12]}.ctl", f"{live.id[:12]}.io"])
    assert live.owner_pid == os.getpid()


def test_records_of_other_versions_still_load(store: Store) -> None:
    c = _create(store)
    record = records.paths(store, c.id).record
    data = json.loads(record.read_text())
    del data["domain_uuid"]
    record.write_text(json.dumps({**data, "added_later": 1}))
    assert [x.id for x in records.all_containers(store)] == [c.id]


def test_a_guest_kernel_panic_is_an_exit_with_the_console_tail(store: Store) -> None:
    import libvirt

    from hyperrun.containers import lifecycle

    c = _create(store)
    files = records.paths(store, c.id)
    files.exit_file.write_text("137\nthe VM ended before the container's main process "
                               "exited\n")
    files.console_log.write_text("[    1.0] booting\n" * 50 + "[    9.9] Kernel panic - not "
                                 "syncing: Attempted to kill init! exitcode=0x0000000b\n"
                                 "[    9.9] Rebooting in 1 seconds..\n")
    conn = libvirt.open("test:///default")  # knows no domain of ours
    try:
        now, state = lifecycle.refresh(conn, store, c)
    finally:
        conn.close()
    assert state is lifecycle.State.EXITED and now.exit_status == 137
    assert now.error.startswith("the guest kernel panicked")
    assert "Attempted to kill init!" in now.error and now.error.count("\n") <= 12
