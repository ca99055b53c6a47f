"""Unpack image layers into a staging directory, treating every entry as hostile.

tarfile is used only to read headers and data; every filesystem operation is done here,
on paths resolved by `_Root` so that nothing can reach outside the staging root: symlinks
met in parent components are followed but confined to the root (as securejoin does), and
the final component is never followed when writing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from hyperrun.errors import HostileLayer, InvalidImage
from hyperrun.images import tarsafe
from hyperrun.images.compression import Gunzip
from hyperrun.images.limits import SizeBudget, ensure_room, is_no_space, no_space
from hyperrun.images.tarsafe import first_line

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
MAX_SYMLINK_FOLLOWS = 255
MAX_DEV_MAJOR = 4096  # Linux's dev_t: 12 bits of major,
MAX_DEV_MINOR = 1 << 20  # 20 bits of minor
MAX_ID = (1 << 32) - 2  # (uid_t)-1 means "unchanged" to chown, so it is not a real owner

_COPY_CHUNK = 1 << 20
_ROOM_CHECK = 1 << 20  # files at least this large are checked against the free space first


class _Reject(Exception):
    """Raised inside the unpacker; turned into HostileLayer with the layer and entry name."""


class _Root:
    """A staging root and the confined path resolution every operation goes through."""

    def __init__(self, path: Path) -> None:
        self.path = os.path.realpath(path)

    def resolve(self, components: Sequence[str]) -> str:
        """Host path of components, following every symlink met but never leaving the root."""
        resolved: list[str] = []
        pending = list(reversed(components))
        follows = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = os.path.join(self.path, *resolved, part)
            try:
                st = os.lstat(candidate)
            except FileNotFoundError:
                resolved.append(part)
                continue
            except NotADirectoryError:
                raise _Reject("has a parent that is not a directory") from None
            if not stat.S_ISLNK(st.st_mode):
                resolved.append(part)
                continue
            follows += 1
            if follows > MAX_SYMLINK_FOLLOWS:
                raise _Reject("goes through too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []  # absolute targets are relative to the root
            pending.extend(reversed(target.split("/")))
        return os.path.join(self.path, *resolved)

    def is_confined(self, path: str) -> bool:
        """True if no component of path below the root is a symlink (checked now)."""
        rel = os.path.relpath(path, self.path)
        if rel == ".":
            return True
        current = self.path
        for part in rel.split("/"):
            if part in ("", ".", ".."):
                return False
            current = os.path.join(current, part)
            try:
                if stat.S_ISLNK(os.lstat(current).st_mode):
                    return False
            except OSError:
                return False
        return True

    def mkdir_parents(self, components: Sequence[str], created: set[str]) -> str:
        """Resolve a parent directory, creating missing components as docker does (0755)."""
        path = self.resolve(components)
        missing: list[str] = []
        probe = path
        while probe != self.path:
            try:
                st = os.lstat(probe)
            except FileNotFoundError:
                missing.append(probe)
                probe = os.path.dirname(probe)
                continue
            except NotADirectoryError:
                raise _Reject("has a parent that is not a directory") from None
            if not stat.S_ISDIR(st.st_mode):
                raise _Reject("has a parent that is not a directory")
            break
        for directory in reversed(missing):
            os.mkdir(directory, 0o755)
            created.add(directory)
        return path


def entry_components(name: str) -> list[str]:
    """Split a tar entry name into components: absolute names become relative, `..` is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _Reject("contains '..'")
    return parts


def _remove(path: str) -> None:
    """Remove whatever is at path (a directory with its tree) without following symlinks."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class _LayerApplier:
    def __init__(self, root: _Root, layer_name: str, budget: SizeBudget, where: str) -> None:
        self.root = root
        self.layer_name = layer_name
        self.budget = budget  # the files' declared sizes: a sparse entry counts in full
        self.where = where  # the store, as a "no space left" error names it
        self.unpacked: set[str] = set()  # host paths written by this layer (opaque dirs keep them)
        self.dir_times: list[tuple[str, float]] = []
        self.is_root = os.geteuid() == 0
        # Resolved parent directories by entry components: most entries share their
        # parent with the one before. Only removing something can change how a path
        # resolves (a cached parent is an existing directory, so nothing new can shadow
        # it), so every removal clears the cache.
        self.parents: dict[tuple[str, ...], str] = {}

    def apply(self, tar: tarfile.TarFile) -> None:
        for member in tarsafe.members(tar, f"layer {self.layer_name}"):
            try:
                self.entry(tar, member)
            except _Reject as exc:
                raise HostileLayer(self.layer_name, member.name[:120], str(exc)) from None
            except ValueError as exc:  # os calls refuse NUL bytes this way
                raise HostileLayer(self.layer_name, member.name[:120],
                                   f"cannot be applied: {first_line(exc)}") from None
            except OSError as exc:
                if is_no_space(exc):
                    raise no_space(self.where) from None
                reason = f"cannot be applied: {exc.strerror or exc}"
                raise HostileLayer(self.layer_name, member.name[:120], reason) from None
        # Directory mtimes last: adding children changed them. Re-check confinement, as a
        # later entry may have replaced a parent with a symlink.
        for path, mtime in reversed(self.dir_times):
            if self.root.is_confined(path) and os.path.isdir(path):
                with contextlib.suppress(OSError, OverflowError, ValueError):
                    os.utime(path, (mtime, mtime), follow_symlinks=False)

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if "\0" in member.name or "\0" in member.linkname:
            raise _Reject("has a NUL byte in its name or link target")
        parts = entry_components(member.name)
        if parts and parts[-1].startswith(WHITEOUT_PREFIX):
            self.whiteout(parts)
            return
        if not parts:
            if not member.isdir():
                raise _Reject("would replace the root directory")
            self.metadata(self.root.path, member, is_dir=True)
            return
        self.check_type(member)
        parent = self.parent_dir(parts[:-1])
        target = os.path.join(parent, parts[-1])
        if member.isreg():
            # Checked before a byte is written: the declared size, not what the tar
            # stream holds, is what a sparse or lying entry would write.
            self.budget.charge(member.size)
            if member.size >= _ROOM_CHECK:
                ensure_room(parent, member.size, self.where)

        if member.isreg() and self.write_file(tar, member, target):
            self.unpacked.add(target)
            return

        if member.type == tarfile.LNKTYPE:
            source = self.hardlink_source(member.linkname)
            if source == target:
                return  # a link to itself: docker keeps the file as it is
        else:
            source = None

        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
            self.remove(target)
            existing = None

        if member.isdir():
            if existing is None:
                os.mkdir(target, 0o700)
        elif member.isreg():
            self.write_file(tar, member, target)
            self.unpacked.add(target)
            return
        elif member.type == tarfile.SYMTYPE:
            if not member.linkname or "\0" in member.linkname:
                raise _Reject("is a symlink with an empty or invalid target")
            os.symlink(member.linkname, target)
        elif member.type == tarfile.LNKTYPE:
            assert source is not None
            os.link(source, target, follow_symlinks=False)
        elif member.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            kind = stat.S_IFCHR if member.type == tarfile.CHRTYPE else stat.S_IFBLK
            os.mknod(target, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.type == tarfile.FIFOTYPE:
            os.mkfifo(target, 0o600)
        self.unpacked.add(target)
        if member.type != tarfile.LNKTYPE:  # a hard link shares its source's inode metadata
            self.metadata(target, member, is_dir=member.isdir())

    def parent_dir(self, parts: list[str]) -> str:
        key = tuple(parts)
        path = self.parents.get(key)
        if path is None:
            path = self.parents[key] = self.root.mkdir_parents(parts, self.unpacked)
        return path

    def remove(self, path: str) -> None:
        self.parents.clear()
        _remove(path)

    def check_type(self, member: tarfile.TarInfo) -> None:
        if member.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            if not (0 <= member.devmajor < MAX_DEV_MAJOR and 0 <= member.devminor < MAX_DEV_MINOR):
                raise _Reject(
                    f"is a device with impossible numbers {member.devmajor}:{member.devminor}"
                )
        elif not (
            member.isdir()
            or member.isreg()
            or member.type in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE)
        ):
            raise _Reject(f"has unsupported tar type {member.type!r}")
        if not (0 <= member.uid <= MAX_ID and 0 <= member.gid <= MAX_ID):
            raise _Reject(f"has impossible owner {member.uid}:{member.gid}")

    def hardlink_source(self, linkname: str) -> str:
        parts = entry_components(linkname)
        if not parts:
            raise _Reject("is a hard link to the root directory")
        source = os.path.join(self.root.resolve(parts[:-1]), parts[-1])
        try:
            st = os.lstat(source)
        except OSError:
            raise _Reject(f"is a hard link to missing {linkname[:120]!r}") from None
        if not stat.S_ISREG(st.st_mode):
            raise _Reject(f"is a hard link to {linkname[:120]!r}, which is not a regular file")
        return source

    def write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> bool:
        """Create target with the member's data, owner, mode and mtime; False if it exists.

        Everything goes through the open descriptor: O_EXCL | O_NOFOLLOW never follows
        or reuses what was there, and no path is looked up again.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(target, flags, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            data = tar.extractfile(member)
            if data is not None:
                shutil.copyfileobj(data, out, _COPY_CHUNK)
            out.flush()
            if self.is_root:
                os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, stat.S_IMODE(member.mode))  # after chown, which clears setuid
            with contextlib.suppress(OverflowError, ValueError):
                os.utime(fd, (member.mtime, member.mtime))
        return True

    def whiteout(self, parts: list[str]) -> None:
        base = parts[-1]
        parent = self.parent_dir(parts[:-1])
        if base == WHITEOUT_OPAQUE:
            self.make_opaque(parent)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            raise _Reject("is an unknown whiteout meta entry")
        victim = base[len(WHITEOUT_PREFIX):]
        if victim in ("", ".", "..") or "/" in victim:
            raise _Reject("is a malformed whiteout")
        self.remove(os.path.join(parent, victim))

    def make_opaque(self, directory: str) -> None:
        """Drop everything lower layers put in directory; this layer's entries survive."""
        keep: set[str] = set()
        for path in self.unpacked:
            while path.startswith(directory + "/") and path not in keep:
                keep.add(path)
                path = os.path.dirname(path)
        self._prune(directory, keep)

    def _prune(self, directory: str, keep: set[str]) -> None:
        with os.scandir(directory) as entries:
            children = list(entries)
        for child in children:
            if child.path not in keep:
                self.remove(child.path)
            elif child.is_dir(follow_symlinks=False):
                self._prune(child.path, keep)

    def metadata(self, path: str, member: tarfile.TarInfo, *, is_dir: bool) -> None:
        is_link = member.type == tarfile.SYMTYPE
        if self.is_root:
            os.lchown(path, member.uid, member.gid)
        if not is_link:
            # After chown, which clears setuid/setgid.
            os.chmod(path, stat.S_IMODE(member.mode))
        if is_dir:
            self.dir_times.append((path, member.mtime))
            return
        with contextlib.suppress(OverflowError, ValueError):
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def apply_layer(root: Path, layer: IO[bytes], *, name: str, budget: SizeBudget | None = None,
                where: Path | str | None = None) -> None:
    """Apply one layer tar (plain, gzip, bzip2 or xz) on top of root.

    The files written are charged to budget (default: a fresh image size limit); where
    names the store in a "no space left" error (default: root).
    """
    applier = _LayerApplier(_Root(root), name, budget or SizeBudget(name),
                            str(where or root))
    try:
        with tarsafe.open_tar(f"layer {name}", fileobj=layer, mode="r|*") as tar:
            applier.apply(tar)
    except tarsafe.READ_ERRORS as exc:
        raise InvalidImage(
            f"layer {name} is not a readable tar archive: {first_line(exc)}",
            hint="the image is corrupt or uses a compression hyperrun does not support (zstd)",
        ) from None



def apply_layers(root: Path, layers: Sequence[tuple[str, Path]], *,
                 budget: SizeBudget | None = None, where: Path | str | None = None) -> None:
    """Apply (name, path) layer files in order onto root, all charged to one budget.

    A layer listed twice in a row is applied once: applying a layer over its own result
    changes nothing, and an archive listing one layer a thousand times must not cost a
    thousand applications.
    """
    budget = budget or SizeBudget(str(root))
    previous: Path | None = None
    for name, path in layers:
        if path == previous:
            continue
        previous = path
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
            fh.seek(0)
            if not gzipped:
                apply_layer(root, fh, name=name, budget=budget, where=where)
                continue
            gunzip = Gunzip(fh)
            with gunzip as plain:
                try:
                    apply_layer(root, plain, name=name, budget=budget, where=where)
                except InvalidImage:
                    gunzip.raise_error(name)  # a truncated stream is the inflater's fault
                    raise
            gunzip.raise_error(name)
