"""Read-only access to the files of an image archive: a tar (maybe compressed) or a directory.

Archives come from outside, so names are looked up, never extracted: a member name or a
symlink inside the archive can only ever lead to another member of the same archive.
"""

from __future__ import annotations

import contextlib
import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

from hyperrun.errors import InvalidImage

_MAX_LINKS = 16


class Archive(Protocol):
    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> IO[bytes]: ...


def normalise(name: str) -> str | None:
    """A member name without leading `/` or `./`; None if it climbs out with `..`."""
    path = posixpath.normpath("/" + name).lstrip("/")
    if not path or path == ".":
        return None
    # normpath("/" + ...) already clamps `..`; refuse rather than silently reinterpret.
    if ".." in name.split("/"):
        return None
    return path


class TarArchive:
    def __init__(self, tar: tarfile.TarFile, label: str) -> None:
        self.tar = tar
        self.label = label
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in tar.getmembers():
            name = normalise(member.name)
            if name is not None:
                self.members[name] = member

    def _member(self, name: str) -> tarfile.TarInfo | None:
        key = normalise(name)
        for _ in range(_MAX_LINKS):
            if key is None:
                return None
            member = self.members.get(key)
            if member is None:
                return None
            if member.issym():
                target = member.linkname
                if not target.startswith("/"):
                    target = posixpath.join(posixpath.dirname(key), target)
                key = _clamp(target)
            elif member.islnk():
                key = normalise(member.linkname)
            else:
                return member
        return None

    def exists(self, name: str) -> bool:
        member = self._member(name)
        return member is not None and member.isreg()

    def open(self, name: str) -> IO[bytes]:
        member = self._member(name)
        if member is None or not member.isreg():
            raise InvalidImage(f"{self.label}: {name} is missing from the archive")
        data = self.tar.extractfile(member)
        assert data is not None
        return data


class DirArchive:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path | None:
        key = normalise(name)
        return None if key is None else self.root / key

    def exists(self, name: str) -> bool:
        path = self._path(name)
        return path is not None and path.is_file()

    def open(self, name: str) -> IO[bytes]:
        path = self._path(name)
        if path is None or not path.is_file():
            raise InvalidImage(f"{self.root}: {name} is missing from the image layout")
        return open(path, "rb")


def _clamp(path: str) -> str | None:
    # A relative symlink inside the archive: resolve `..` lexically, staying in the archive.
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) or None


@contextlib.contextmanager
def open_archive(path: Path) -> Iterator[Archive]:
    """Open a docker-save/OCI archive (tar, optionally gzip/bzip2/xz) or an OCI layout dir."""
    if path.is_dir():
        yield DirArchive(path)
        return
    try:
        tar = tarfile.open(path, "r:*")
    except FileNotFoundError:
        raise InvalidImage(f"{path}: no such file") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(":")
        raise InvalidImage(
            f"{path} is not a tar archive ({reason})",
            hint="expected the output of `docker save` or an OCI image layout",
        ) from None
    with tar:
        try:
            archive = TarArchive(tar, str(path))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise InvalidImage(f"{path}: corrupt tar archive: {exc}") from None
        yield archive
