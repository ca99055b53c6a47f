"""The image verbs: load, import, images, rmi."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from hyperrun import log
from hyperrun import reference as references
from hyperrun.cli.image_format import print_images
from hyperrun.cli.table import format_table, human_size, humanize_duration
from hyperrun.containers import records as state
from hyperrun.errors import HyperrunError, UsageError
from hyperrun.images.compression import CHUNK, copy_hashed
from hyperrun.images.limits import SizeBudget
from hyperrun.images.load import Loader
from hyperrun.images.model import Image
from hyperrun.images.store import ImageStore, parse_created
from hyperrun.store import Store


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the image verbs to the top-level parser."""
    p = subparsers.add_parser("load", help="load an image from a docker save archive or OCI layout")
    p.add_argument("-i", "--input", metavar="FILE", type=Path,
                   help="archive or OCI layout directory to read (default: standard input)")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the load output")
    p.set_defaults(func=load)

    p = subparsers.add_parser("import", help="create an image from a root filesystem tarball")
    p.add_argument("rootfs", metavar="ROOTFS.tar", type=Path,
                   help="tar archive (plain, gzip, bzip2 or xz); - for standard input")
    p.add_argument("name", metavar="NAME[:TAG]", nargs="?", help="name of the new image")
    p.set_defaults(func=import_)

    p = subparsers.add_parser("images", help="list images")
    p.add_argument("repository", metavar="REPOSITORY[:TAG]", nargs="?",
                   help="only images of this repository (and tag)")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", action="store_true", help="show full image IDs")
    p.add_argument("--format", metavar="FORMAT",
                   help="json (one object a line), or a template such as '{{.ID}}'")
    p.set_defaults(func=images)

    p = subparsers.add_parser("rmi", help="remove one or more images")
    p.add_argument("refs", metavar="IMAGE", nargs="+", help="NAME[:TAG], NAME@DIGEST or IMAGE ID")
    p.add_argument("-f", "--force", action="store_true",
                   help="remove an image referenced by several repositories")
    p.set_defaults(func=rmi)


def load(args: argparse.Namespace, store: Store) -> int:
    image_store = ImageStore(store)
    if args.input is not None:
        loaded = Loader(image_store).load(args.input)
    else:
        if sys.stdin.isatty():
            raise UsageError("requested load from stdin, but stdin is empty",
                             hint="pass -i FILE or pipe an archive in")
        with store.tempdir("stdin-") as tmp:
            path = _stdin_to(Path(tmp) / "archive", store)
            loaded = Loader(image_store).load(path)
    # Like docker, -q only silences progress (hyperrun has none); the result is still shown.
    for item in loaded:
        if item.tags:
            for tag in item.tags:
                print(f"Loaded image: {tag.familiar}")
        else:
            print(f"Loaded image ID: {item.image.id}")
    return 0


def _stdin_to(path: Path, store: Store) -> Path:
    """Copy standard input to path: no larger than an image may be, and a full disk said so."""
    with open(path, "wb") as out:
        copy_hashed(lambda: sys.stdin.buffer.read(CHUNK), out, store.root,
                    SizeBudget("on standard input"))
    return path


def import_(args: argparse.Namespace, store: Store) -> int:
    image_store = ImageStore(store)
    if str(args.rootfs) == "-":
        with store.tempdir("stdin-") as tmp:
            path = _stdin_to(Path(tmp) / "rootfs.tar", store)
            loaded = Loader(image_store).import_rootfs(path, args.name)
    else:
        loaded = Loader(image_store).import_rootfs(args.rootfs, args.name)
    print(loaded.image.id)
    return 0


def images(args: argparse.Namespace, store: Store) -> int:
    rows = [(repo, tag, image) for repo, tag, image in iter_rows(ImageStore(store).list())
            if _matches(args.repository, repo, tag)]
    if args.quiet:  # one line per row, duplicates included, as docker prints them
        for _, _, image in rows:
            print(image.id if args.no_trunc else image.short_id)
        return 0
    now = time.time()
    if args.format and args.format.strip() != "table":  # bare `table` is the default
        print_images(rows, args.format, now, args.no_trunc)
        return 0
    table = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    table += [(repo, tag, image.id if args.no_trunc else image.short_id, _created(image, now),
               human_size(image.size)) for repo, tag, image in rows]
    sys.stdout.write(format_table(table))
    return 0


def rmi(args: argparse.Namespace, store: Store) -> int:
    image_store = ImageStore(store)
    failure: HyperrunError | None = None
    for ref in args.refs:
        try:
            for action, what in image_store.remove(
                    ref, force=args.force,
                    users=lambda image_id: state.users_of_image(store, image_id)):
                print(f"{action}: {what}")
        except HyperrunError as exc:
            # Like docker, carry on with the other images; report all but the last failure
            # here and let the top level report the last one.
            if failure is not None:
                log.error(failure.message, failure.hint)
            failure = exc
    if failure is not None:
        raise failure
    return 0


def _matches(pattern: str | None, repo: str, tag: str) -> bool:
    if pattern is None:
        return True
    ref = references.parse(pattern, default_tag=False)
    if ref.digest is not None:
        raise UsageError("filtering `images` by digest is not supported",
                         hint="use REPOSITORY or REPOSITORY:TAG")
    if repo == "<none>":
        return False
    candidate = references.parse(repo, default_tag=False)
    return candidate.name == ref.name and (ref.tag is None or ref.tag == tag)


def _created(image: Image, now: float) -> str:
    created = parse_created(image.created)
    if created is None:
        return "N/A"
    return humanize_duration(now - created.timestamp()) + " ago"


def iter_rows(images: Iterable[Image]) -> Iterator[tuple[str, str, Image]]:
    """(REPOSITORY, TAG, image) rows as `docker images` lists them; untagged as <none>."""
    for image in images:
        if not image.references:
            yield "<none>", "<none>", image
            continue
        tagged = {ref.name for ref in image.references if ref.tag}
        for ref in image.references:
            # A digest-only reference shows as <none> only if its repository has no tag here.
            if ref.tag or ref.name not in tagged:
                yield ref.familiar_name, ref.tag or "<none>", image
                tagged.add(ref.name)
