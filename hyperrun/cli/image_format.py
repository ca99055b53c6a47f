"""`hyperrun images --format`: each listed image as docker's fields (ID, Repository, ...)."""

from __future__ import annotations

from typing import Any

from hyperrun.cli.format import print_rows
from hyperrun.cli.table import human_size, humanize_duration
from hyperrun.images.model import Image
from hyperrun.images.store import parse_created

HEADERS = {
    "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
    "CreatedAt": "CREATED AT", "CreatedSince": "CREATED", "Size": "SIZE",
    "VirtualSize": "SIZE", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE",
    "Containers": "CONTAINERS",
}


def row(repo: str, tag: str, image: Image, now: float, no_trunc: bool) -> dict[str, Any]:
    created = parse_created(image.created)
    return {
        "ID": image.id if no_trunc else image.short_id, "Repository": repo, "Tag": tag,
        "Digest": image.manifest_digest,
        # Go's time.String(), as docker prints CreatedAt.
        "CreatedAt": created.astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z") if created
        else "N/A",
        "CreatedSince": humanize_duration(now - created.timestamp()) + " ago" if created
        else "N/A",
        "Size": human_size(image.size), "VirtualSize": human_size(image.size),
        "SharedSize": "N/A", "UniqueSize": "N/A", "Containers": "N/A",
    }


def print_images(rows: list[tuple[str, str, Image]], fmt: str, now: float,
                 no_trunc: bool) -> None:
    print_rows([row(r, t, i, now, no_trunc) for r, t, i in rows], fmt, HEADERS)
