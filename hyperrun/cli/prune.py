"""What the store takes and giving it back: `image prune`, `system df`, `system prune`.

This is the glue that needs both wings: images know nothing of containers, so which
images are in use, and which containers are stopped, is decided here from the records.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys

from hyperrun.cli.table import format_table, human_size
from hyperrun.containers import records
from hyperrun.errors import HyperrunError, UsageError
from hyperrun.images.prune import prune_images, remove_orphans
from hyperrun.images.store import ImageStore
from hyperrun.images.usage import Usage, allocated, image_usage
from hyperrun.registry import downloads
from hyperrun.store import Store, process_alive

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
    p.set_defaults(func=system_prune)


def setup_image_prune(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true",
                   help="remove every image no container uses, not only dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.set_defaults(func=image_prune)


# ---- the verbs -----------------------------------------------------------------------------


def image_prune(args: argparse.Namespace, store: Store) -> int:
    _confirm(f"WARNING! This will remove {_UNUSED if args.all else _DANGLING}.", args.force,
             "image prune")
    pruned = prune_images(ImageStore(store), dangling_only=not args.all,
                          users=lambda image_id: records.users_of_image(store, image_id))
    if pruned.actions:
        print(_images_report(pruned.actions))
    print(f"Total reclaimed space: {human_size(pruned.reclaimed, 4)}")
    return 0


def system_prune(args: argparse.Namespace, store: Store) -> int:
    _confirm("WARNING! This will remove:\n  - all stopped containers\n"
             f"  - {_UNUSED if args.all else _DANGLING}\n"
             "  - blobs, base disks and temporaries that no image names\n",
             args.force, "system prune")
    reclaimed = 0
    removed = []
    for c in records.all_containers(store):
        if _stopped(c):
            size = allocated(records.paths(store, c.id).dir)
            records.remove_files(store, c)
            reclaimed += size
            removed.append(c.id)
    if removed:
        print("Deleted Containers:\n" + "".join(f"{cid}\n" for cid in removed))
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
    stopped = [c for c in containers if _stopped(c)]
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


def _confirm(warning: str, force: bool, what: str) -> None:
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


def _stopped(c: records.Container) -> bool:
    """Exited, or its `hyperrun run` is gone (libvirt ended its VM with it: AUTODESTROY)."""
    return c.exit_status is not None or bool(c.owner_pid and not process_alive(c.owner_pid))


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
