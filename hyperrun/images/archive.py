"""Read-only access to the files of an image archive: a tar (maybe compressed) or a directory.

Archives come from outside, so names are looked up, never extracted: a member name or a
symlink inside the archive can only ever lead to another member of the same archive.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

from hyperrun.errors import InvalidImage
from hyperrun.images import tarsafe

_MAX_LINKS = 16
MAX_MEMBERS = 100_000  # docker save writes a few files per layer and image


class Archive(Protocol):
    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> IO[bytes]: ...

    def size(self, name: str) -> int: ...


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
        count = 0
        for member in tarsafe.members(tar, label):
            count += 1
            if count > MAX_MEMBERS:
                raise InvalidImage(f"{label}: more than {MAX_MEMBERS} files in the archive",
                                   hint="an image archive holds a few files per layer")
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
            raise InvalidImage(f"{self.label}: {name[:120]} is missing from the archive")
        data = self.tar.extractfile(member)
        assert data is not None
        return data

    def size(self, name: str) -> int:
        """The size the archive declares for name (not yet read)."""
        member = self._member(name)
        return member.size if member is not None else 0


class DirArchive:
    """An OCI layout directory: only regular files inside it are ever opened.

    Each component is opened relative to its parent with O_NOFOLLOW, so a blob that is a
    symlink (to /etc/shadow, say) or sits under a symlinked directory is refused rather
    than read as root.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _open_fd(self, name: str) -> int | None:
        key = normalise(name)
        if key is None:
            return None
        parts = key.split("/")
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECTORY
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the user's path
        except OSError as exc:
            raise InvalidImage(f"{self.root}: cannot open the image layout: "
                               f"{exc.strerror}") from None
        try:
            for part in parts[:-1]:
                parent, fd = fd, -1
                try:
                    fd = os.open(part, flags, dir_fd=parent)
                finally:
                    os.close(parent)
            # O_PATH: a device or FIFO in a blob's place is looked at, never opened.
            leaf = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            return None
        finally:
            if fd >= 0:
                os.close(fd)
        try:
            if not stat.S_ISREG(os.fstat(leaf).st_mode):
                return None
            return os.open(f"/proc/self/fd/{leaf}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        finally:
            os.close(leaf)

    def exists(self, name: str) -> bool:
        fd = self._open_fd(name)
        if fd is None:
            return False
        os.close(fd)
        return True

    def open(self, name: str) -> IO[bytes]:
        fd = self._open_fd(name)
        if fd is None:
            raise InvalidImage(f"{self.root}: {name[:120]} is missing from the image layout "
                               "or is not a regular file in it",
                               hint="blobs of an OCI layout must be regular files, "
                                    "not symlinks, devices or FIFOs")
        return os.fdopen(fd, "rb")

    def size(self, name: str) -> int:
        fd = self._open_fd(name)
        if fd is None:
            return 0
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)


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
        tar = tarsafe.open_tar(str(path), name=path, mode="r:*")
    except FileNotFoundError:
        raise InvalidImage(f"{path}: no such file") from None
    except (OSError, *tarsafe.READ_ERRORS) as exc:
        reason = tarsafe.first_line(exc).rstrip(":")
        raise InvalidImage(
            f"{path} is not a tar archive ({reason})",
            hint="expected the output of `docker save` or an OCI image layout",
        ) from None
    with tar:
        yield TarArchive(tar, str(path))
