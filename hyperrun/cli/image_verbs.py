"""The image verbs that name, export and explain images: tag, save, history.

Each is also reachable as `hyperrun image VERB`, as in docker, together with
`image prune` (cli/prune.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from hyperrun import log
from hyperrun.cli import prune as cli_prune
from hyperrun.cli.table import format_table, human_size, humanize_duration
from hyperrun.errors import HyperrunError, UsageError
from hyperrun.images.history import Step, history
from hyperrun.images.save import resolve, save_to_file, write_archive
from hyperrun.images.store import ImageStore, parse_created
from hyperrun.store import Store

CREATED_BY_WIDTH = 45  # docker's truncation of CREATED BY


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add tag, save, history, and the `image` group, to the top-level parser."""
    for name, setup in _VERBS.items():
        setup(subparsers.add_parser(name, help=_HELP[name]))
    group = subparsers.add_parser("image", help="manage images (tag, save, history, prune)")
    verbs = group.add_subparsers(dest="image_verb", metavar="COMMAND",
                                 parser_class=type(group))
    verbs.required = True
    for name, setup in _VERBS.items():
        setup(verbs.add_parser(name, help=_HELP[name]))
    cli_prune.setup_image_prune(verbs.add_parser("prune", help="remove unused images"))


def _setup_tag(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]", help="NAME[:TAG], digest or ID")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]", help="the new NAME[:TAG]")
    p.set_defaults(func=tag)


def _setup_save(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write to FILE (default: standard output, if it is not a terminal)")
    p.add_argument("names", metavar="IMAGE", nargs="+",
                   help="NAME[:TAG] (a bare NAME saves all its tags), NAME@DIGEST or ID")
    p.set_defaults(func=save)


def _setup_history(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="IMAGE")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.set_defaults(func=history_)


_VERBS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "tag": _setup_tag, "save": _setup_save, "history": _setup_history}
_HELP = {"tag": "create a tag TARGET_IMAGE that refers to SOURCE_IMAGE",
         "save": "save images to a tar archive (docker save format)",
         "history": "show the history of an image"}


def tag(args: argparse.Namespace, store: Store) -> int:
    ImageStore(store).tag(args.source, args.target)
    return 0


def save(args: argparse.Namespace, store: Store) -> int:
    images = ImageStore(store)
    if args.output is None and sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal",
                         hint="use -o FILE or redirect the output")
    items = resolve(images, args.names)  # every name is checked before anything is written
    if args.output is not None and args.output != "-":
        save_to_file(images, items, args.output)
        return 0
    try:
        write_archive(images, items, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise HyperrunError("the reader of standard output went away; the archive is "
                            "incomplete", hint="save with -o FILE instead") from None
    except OSError as exc:
        raise HyperrunError(f"cannot write the archive to standard output: "
                            f"{exc.strerror or exc}", hint="save with -o FILE instead") from None
    return 0


def history_(args: argparse.Namespace, store: Store) -> int:
    images = ImageStore(store)
    image = images.get(args.name)
    steps = history(images, image)
    ids = [(image.id if args.no_trunc else image.short_id) if i == 0 else "<missing>"
           for i in range(len(steps))]
    if args.quiet:
        for image_id in ids:
            print(image_id)
        return 0
    now = time.time()
    rows = [("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")]
    rows += [(image_id, _created(step, now), _created_by(step, args.no_trunc),
              human_size(step.size), log.escape(step.comment))
             for image_id, step in zip(ids, steps, strict=True)]
    sys.stdout.write(format_table(rows))
    return 0


def _created(step: Step, now: float) -> str:
    created = parse_created(step.created)
    if created is None:
        return "N/A"
    return humanize_duration(now - created.timestamp()) + " ago"


def _created_by(step: Step, no_trunc: bool) -> str:
    # Text from the image: escaped, so a crafted history cannot drive the terminal.
    text = log.escape(step.created_by.replace("\t", " "), limit=100_000)
    if no_trunc or len(text) <= CREATED_BY_WIDTH:
        return text
    return text[:CREATED_BY_WIDTH - 1] + "…"
