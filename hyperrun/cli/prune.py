"""What the store takes and giving it back: `image prune`, `system df`, `system prune`.

This is the glue that needs both wings: images know nothing of containers, so which
images are in use, and which containers are stopped, is decided here from the records.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
from typing import TYPE_CHECKING

from hyperrun import log
from hyperrun.cli.table import format_table, human_size
from hyperrun.containers import lifecycle, orphans, records, status
from hyperrun.containers.lifecycle import State
from hyperrun.errors import HyperrunError, UsageError
from hyperrun.images.prune import prune_images, remove_orphans
from hyperrun.images.store import ImageStore
from hyperrun.images.usage import Usage, allocated, image_usage
from hyperrun.registry import downloads
from hyperrun.store import Store, process_alive
from hyperrun.vm import hypervisor

if TYPE_CHECKING:
    import libvirt

_DANGLING = "all dangling images"
_UNUSED = "all images without at least one container associated to them"


class Cancelled(HyperrunError):
    """The user answered no: nothing was removed."""

    status = 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = subparsers.add_parser("system", help="disk usage of the store, and pruning it")
    verbs = group.add_subparsers(dest="system_verb", metavar="COMMAND", parser_class=type(group))
    verbs.required = True
    p = verbs.add_parser("df", help="show the disk space images and containers take")
    p.set_defaults(func=system_df)
    p = verbs.add_parser("prune", help="remove stopped containers, unused images and leftovers")
    p.add_argument("-a", "--all", action="store_true",
                   help="remove every image no container uses, not only dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--connect", help="libvirt URI")
    p.set_defaults(func=system_prune)


def setup_image_prune(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true",
                   help="remove every image no container uses, not only dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.set_defaults(func=image_prune)


# ---- the verbs -----------------------------------------------------------------------------


def image_prune(args: argparse.Namespace, store: Store) -> int:
    confirm(f"WARNING! This will remove {_UNUSED if args.all else _DANGLING}.", args.force,
             "image prune")
    pruned = prune_images(ImageStore(store), dangling_only=not args.all,
                          users=lambda image_id: records.users_of_image(store, image_id))
    if pruned.actions:
        print(_images_report(pruned.actions))
    print(f"Total reclaimed space: {human_size(pruned.reclaimed, 4)}")
    return 0


def system_prune(args: argparse.Namespace, store: Store) -> int:
    confirm("WARNING! This will remove:\n  - all stopped containers\n"
             f"  - {_UNUSED if args.all else _DANGLING}\n"
             "  - blobs, base disks and temporaries that no image names\n",
             args.force, "system prune")
    reclaimed = 0
    removed = []
    conn, _ = status.connect_or_none(hypervisor.uri_from_env(args.connect))
    try:
        for c in records.all_containers(store):
            if _stopped(conn, store, c):
                size = allocated(records.paths(store, c.id).dir)
                if conn is not None:
                    lifecycle.remove(conn, store, c, force=False)
                else:
                    records.remove_files(store, c)
                reclaimed += size
                removed.append(c.id)
        if removed:
            print("Deleted Containers:\n" + "".join(f"{cid}\n" for cid in removed))
        left = [*(orphans.remove_domains(conn, store) if conn else []),
                *orphans.stop_monitors(store), *orphans.remove_directories(store)]
        records.sweep(store)
        if left:
            print("Deleted leftovers of killed commands:\n"
                  + "".join(f"{log.escape(what)}\n" for what in left))
    finally:
        if conn is not None:
            conn.close()
    images = ImageStore(store)
    pruned = prune_images(images, dangling_only=not args.all,
                          users=lambda image_id: records.users_of_image(store, image_id))
    if pruned.actions:
        print(_images_report(pruned.actions))
    reclaimed += pruned.reclaimed + remove_orphans(images, keep_blobs=_pull_running(store))
    print(f"Total reclaimed space: {human_size(reclaimed, 4)}")
    return 0


def system_df(args: argparse.Namespace, store: Store) -> int:
    containers = list(records.all_containers(store))
    images = image_usage(ImageStore(store), {c.image_id for c in containers})
    sizes = {c.id: allocated(records.paths(store, c.id).dir) for c in containers}
    conn, _ = status.connect_or_none(hypervisor.uri_from_env(None))
    try:
        stopped = [c for c in containers if _stopped(conn, store, c)]
    finally:
        if conn is not None:
            conn.close()
    volumes = Usage(0, 0, 0, 0)  # hyperrun has no volumes yet; docker's row, for scripts
    rows = [("TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE")]
    rows += [(name, str(u.total), str(u.active), human_size(u.size, 4), _reclaimable(u))
             for name, u in (
                 ("Images", images),
                 ("Containers", Usage(len(containers), len(containers) - len(stopped),
                                      sum(sizes.values()), sum(sizes[c.id] for c in stopped))),
                 ("Local Volumes", volumes))]
    sys.stdout.write(format_table(rows))
    return 0


# ---- helpers -------------------------------------------------------------------------------


def confirm(warning: str, force: bool, what: str) -> None:
    """docker's prompt; without a terminal to ask on, only -f may go ahead."""
    if force:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{what} needs confirmation and standard input is not a terminal",
                         hint="pass -f to remove without asking")
    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise Cancelled(f"{what} cancelled; nothing was removed",
                        hint="answer y to go ahead, or pass -f")


def _images_report(actions: tuple[tuple[str, str], ...]) -> str:
    return "Deleted Images:\n" + "".join(f"{kind.lower()}: {what}\n" for kind, what in actions)


def _reclaimable(u: Usage) -> str:
    if u.size > 0:
        return f"{human_size(u.reclaimable, 4)} ({u.reclaimable * 100 // u.size}%)"
    return human_size(u.reclaimable, 4)


def _stopped(conn: libvirt.virConnect | None, store: Store, c: records.Container) -> bool:
    """Exited, as libvirt and the record tell together; without libvirt, only what the
    record says (a detached container's VM runs on after its `run` has gone)."""
    if conn is None:
        return c.exit_status is not None
    return lifecycle.refresh(conn, store, c)[1] is State.EXITED


def _pull_running(store: Store) -> bool:
    """Whether some pull holds a blob lock or writes a partial blob: its finished layers
    sit in the store unnamed until it commits, and must not be taken for orphans."""
    for path in (store.tmp / "locks").glob("*"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the lock if we took it
    for partial in store.tmp.glob(f"{downloads.PARTIAL}*-*"):
        pid = partial.name[len(downloads.PARTIAL):].partition("-")[0]
        if pid.isdigit() and process_alive(int(pid)):
            return True
    return False
