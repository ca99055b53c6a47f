"""`cp`: files between the host and a running container, as tar streams through the agent.

Inside the container the agent's own busybox `tar` does the work (docs/protocol.md "The
agent's tools"): it runs chrooted in the container's root and mount namespace, so every
container path, `..` and symlinks included, resolves inside the container, as with
`docker cp`. The tar stream coming out of the guest is hostile input: it is extracted
here member by member, confined to the destination (layers._Root resolution, tarsafe's
header checks), bounded in size, without device nodes, set-uid/set-gid bits or links
that leave the destination.
"""

from __future__ import annotations

import contextlib
import enum
import os
import posixpath
import shutil
import signal
import stat
import tarfile
import threading
from typing import IO

from hyperrun.containers import top
from hyperrun.errors import HyperrunError, InvalidImage
from hyperrun.images import layers, tarsafe
from hyperrun.log import escape
from hyperrun.store import Store

COPY_MAX = 8 << 30  # bytes of tar stream accepted from the guest
_CHUNK = 1 << 20


class CopyError(HyperrunError):
    status = 1  # docker cp's status for a failed copy


def container_source(path: str) -> tuple[str, str]:
    """(directory, name) to give `tar -c -C DIR NAME`; name "." copies the contents.

    Relative paths are relative to the container's root; `..` cannot climb above it
    (and the guest is chrooted there anyway).
    """
    norm = in_root(path)
    if path.endswith(("/.", "/./")) or path in (".", "./") or norm == "/":
        return norm, "."
    return posixpath.dirname(norm), posixpath.basename(norm)


def in_root(path: str) -> str:
    """A container path made absolute and normal (POSIX keeps a leading `//`; we do not)."""
    return posixpath.normpath("/" + path.lstrip("/"))


# --- container → host ---------------------------------------------------------------


class Mode(enum.Enum):
    INTO = "into"  # DEST is a directory: the source lands in it under its own name
    AS = "as"  # DEST does not exist (or is a file): the source becomes DEST


class HostileCopy(InvalidImage):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"refusing the copy from the container: entry {name[:120]!r} {reason}",
                         hint="the container's files (or its guest) are malicious; what was "
                              "written so far stays in the destination")


class _Counted:
    """A read-only file object that refuses more than `limit` bytes."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw, self.limit, self.count = raw, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        if self.count > self.limit:
            raise CopyError(f"the copy is larger than {self.limit >> 20} MiB",
                            hint="copy a smaller part of the container")
        return data


class Extractor:
    """Writes the members of an untrusted tar stream under dest, confined to it.

    name is the top member the stream must hold (the source's base name, or "." for a
    directory's contents); mode says where it lands.
    """

    def __init__(self, dest: str, name: str, mode: Mode, *, keep_owner: bool,
                 limit: int = COPY_MAX) -> None:
        self.dest, self.name, self.mode = dest, name, mode
        self.keep_owner = keep_owner and os.geteuid() == 0
        self.limit = limit
        self.root: layers._Root | None = None
        self.single_file = False  # mode AS with a file source: one member, written to dest
        self.done_single = False
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []
        self.skipped: list[str] = []

    def extract(self, stream: IO[bytes]) -> None:
        counted = _Counted(stream, self.limit)
        label = "the tar stream from the container"
        try:
            with tarsafe.open_tar(label, fileobj=counted, mode="r|") as tar:
                for member in tarsafe.members(tar, label):
                    try:
                        self.member(tar, member)
                    except layers._Reject as exc:
                        raise HostileCopy(member.name, str(exc)) from None
                    except ValueError as exc:  # NUL bytes in a name
                        raise HostileCopy(member.name, tarsafe.first_line(exc)) from None
        except tarsafe.READ_ERRORS as exc:
            raise InvalidImage(f"{label} is not a readable tar archive: "
                               f"{tarsafe.first_line(exc)}") from None
        # Directory modes and times last: a read-only directory must still get its files.
        for path, member in reversed(self.dirs):
            if self.root is not None and self.root.is_confined(path):
                self.metadata(path, member)

    def components(self, member: tarfile.TarInfo) -> list[str]:
        """The member's path below the destination root, checked against what we asked for."""
        if member.name.startswith("/"):
            raise layers._Reject("has an absolute name")
        parts = layers.entry_components(member.name)
        top_name = [] if self.name == "." else [self.name]
        if parts[:len(top_name)] != top_name:
            raise layers._Reject(f"is not inside {self.name!r}, which was asked for")
        if self.mode is Mode.AS:
            return parts[len(top_name):]
        return parts

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if "\0" in member.name or "\0" in member.linkname:
            raise layers._Reject("has a NUL byte in its name or link target")
        parts = self.components(member)
        if self.done_single:
            raise layers._Reject("follows a single file")
        if self.root is None:
            self.start(member, parts)
            if self.single_file:
                self.write(tar, member, self.dest)
                self.done_single = True
                return
        assert self.root is not None
        if not parts:
            if not member.isdir():
                raise layers._Reject("would replace the destination directory")
            self.dirs.append((self.root.path, member))
            return
        if member.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            self.skipped.append(f"{member.name[:120]!r} (a device)")
            return
        parent = self.root.mkdir_parents(parts[:-1], set())
        self.write(tar, member, os.path.join(parent, parts[-1]))

    def start(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        """The first member decides, as docker does, between a file and a directory copy."""
        if parts and self.mode is Mode.AS:
            raise layers._Reject(f"comes before {self.name!r} itself")
        if self.mode is Mode.INTO:
            self.root = layers._Root(self.dest)  # type: ignore[arg-type]
            return
        if member.isdir():
            if os.path.lexists(self.dest) and not os.path.isdir(self.dest):
                raise CopyError(f"cannot copy a directory to the file {self.dest}",
                                hint="remove the file or name a directory")
            os.makedirs(self.dest, 0o700, exist_ok=True)
            self.root = layers._Root(self.dest)  # type: ignore[arg-type]
            return
        if os.path.isdir(self.dest):
            raise CopyError(f"cannot overwrite the directory {self.dest} with a file")
        self.single_file = True
        self.root = layers._Root(os.path.dirname(os.path.abspath(self.dest)))  # type: ignore[arg-type]

    def write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
        assert self.root is not None
        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
            if stat.S_ISDIR(existing.st_mode):
                raise CopyError(f"cannot overwrite the directory {target} with a non-directory")
            os.unlink(target)
        if member.isdir():
            if existing is None:
                os.mkdir(target, 0o700)
            self.dirs.append((target, member))
            return
        if member.isreg():
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(target, flags, 0o600)
            with os.fdopen(fd, "wb") as out:
                data = tar.extractfile(member)
                if data is not None:
                    shutil.copyfileobj(data, out, _CHUNK)
        elif member.issym():
            if not self.link_stays(target, member.linkname):
                self.skipped.append(f"{member.name[:120]!r} (a symlink leaving the destination)")
                return
            os.symlink(member.linkname, target)
            return  # symlinks keep the invoking user and no mode
        elif member.islnk():
            os.link(self.hardlink_source(member), target, follow_symlinks=False)
            return  # it shares the source's inode and its metadata
        elif member.isfifo():
            os.mkfifo(target, 0o600)
        else:
            raise layers._Reject(f"has unsupported tar type {member.type!r}")
        self.metadata(target, member)

    def link_stays(self, target: str, linkname: str) -> bool:
        """Whether a symlink at target pointing to linkname stays inside the destination."""
        assert self.root is not None
        if not linkname or linkname.startswith("/"):
            return False
        where = os.path.relpath(os.path.dirname(target), self.root.path)
        resolved = posixpath.normpath(posixpath.join(where, linkname))
        return resolved != ".." and not resolved.startswith("../")

    def hardlink_source(self, member: tarfile.TarInfo) -> str:
        assert self.root is not None
        original = member.name
        member.name = member.linkname  # the link target is named as an archive member
        try:
            parts = self.components(member)
        finally:
            member.name = original
        if not parts:
            raise layers._Reject("is a hard link to the destination directory")
        source = os.path.join(self.root.resolve(parts[:-1]), parts[-1])
        try:
            st = os.lstat(source)
        except OSError:
            raise layers._Reject(f"is a hard link to missing {member.linkname[:120]!r}") from None
        if not stat.S_ISREG(st.st_mode):
            raise layers._Reject("is a hard link to something that is not a regular file")
        return source

    def metadata(self, path: str, member: tarfile.TarInfo) -> None:
        if self.keep_owner:
            os.lchown(path, member.uid, member.gid)
        # After chown, which clears them anyway: never set-uid or set-gid on the host.
        os.chmod(path, stat.S_IMODE(member.mode) & ~(stat.S_ISUID | stat.S_ISGID))
        with contextlib.suppress(OverflowError, ValueError):
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def host_destination(dest: str, name: str) -> Mode:
    """Where a container source lands on the host, by docker's rules."""
    if os.path.isdir(dest) and name != ".":
        return Mode.INTO
    parent = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(parent):
        raise CopyError(f"the destination directory {parent} does not exist",
                        hint="create it first")
    if name == "." and os.path.isdir(dest):
        return Mode.INTO
    if name == "." and os.path.lexists(dest):
        raise CopyError(f"cannot copy a directory to the file {dest}",
                        hint="remove the file or name a directory")
    return Mode.AS


def copy_out(uri: str, store: Store, container: str, path: str, dest: str,
             *, archive: bool, limit: int = COPY_MAX) -> list[str]:
    """Copy CONTAINER:path to the host path dest (`-`: a tar stream on stdout).

    Returns the members left out (devices, symlinks leaving dest), for a warning.
    """
    directory, name = container_source(path)
    args = ("tar", "-c", "-C", directory, name)
    if dest == "-":
        c, status, err = top.run_tool(uri, store, container, args, stdin_fd=None, out_fd=1)
        _check(c.name, path, status, err)
        return []
    mode = host_destination(dest, name)
    extractor = Extractor(dest.rstrip("/") or "/", name, mode, keep_owner=archive,
                          limit=limit)
    r, w = os.pipe2(os.O_CLOEXEC)
    failure: list[BaseException] = []

    stop = threading.Event()

    def extract() -> None:
        # Closing the pipe after the end-of-archive block drops whatever follows it.
        with os.fdopen(r, "rb") as stream:
            try:
                extractor.extract(stream)
            except BaseException as exc:  # handed to the main thread
                failure.append(exc)
                stop.set()

    worker = threading.Thread(target=extract, daemon=True)
    worker.start()
    try:
        c, status, err = top.run_tool(uri, store, container, args, stdin_fd=None, out_fd=w,
                                      stop=stop)
    finally:
        os.close(w)
        worker.join()
    # A tar that failed says why (a missing source gives an empty stream); one we killed
    # because its stream was refused does not.
    if failure and status in (0, 128 + signal.SIGKILL):
        raise failure[0]
    _check(c.name, path, status, err)
    if failure:
        raise failure[0]
    return extractor.skipped


def _check(name: str, path: str, status: int, err: str) -> None:
    if status == 0:
        return
    if "No such file" in err or "Not a directory" in err:
        raise CopyError(f"Could not find the file {path} in container {name}",
                        hint=f"check the path with `hyperrun exec {name} ls`")
    raise CopyError(f"copying in container {name} failed: {escape(top.last_line(err, status))}")


# --- host → container ---------------------------------------------------------------

# Runs in busybox sh in the container: $1 the destination, $2 the top name in the tar
# ("." for contents or a raw stream), $3 "dir" or "file". A directory destination gets
# the source inside it; otherwise the source becomes the destination, through a temporary
# directory beside it, as docker does.
_RECEIVE = r"""
d=$1 n=$2 k=$3
if [ -d "$d" ]; then exec tar -x -C "$d"; fi
p=$(dirname "$d")
[ -d "$p" ] || { echo "hyperrun-cp: no directory $p" >&2; exit 3; }
if [ "$n" = . ]; then mkdir "$d" && exec tar -x -C "$d"; fi
if [ -e "$d" ] && [ "$k" = dir ]; then echo "hyperrun-cp: a file is in the way" >&2; exit 4; fi
t=$(mktemp -d "$p/.hyperrun-cp.XXXXXX") || exit 5
tar -x -C "$t" && mv -f "$t/$n" "$d"; s=$?
rm -rf "$t"
exit $s
"""


def _tar_filter(archive: bool):  # type: ignore[no-untyped-def]
    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        # Numbers only: names would be looked up in the container's /etc/passwd.
        info.uname = info.gname = ""
        if not archive:
            info.uid = info.gid = 0  # docker: files copied in belong to root
        return info
    return owned


def copy_in(uri: str, store: Store, src: str, container: str, path: str,
            *, archive: bool) -> None:
    """Copy the host path src (`-`: a tar stream on stdin) to CONTAINER:path."""
    dest = in_root(path)
    if src == "-":
        c, status, err = top.run_tool(uri, store, container,
                                      ("sh", "-c", _RECEIVE, "sh", dest, ".", "dir"),
                                      stdin_fd=0, out_fd=2)
        _check_in(c.name, path, status, err)
        return
    try:
        st = os.lstat(src)
    except OSError as exc:
        raise CopyError(f"cannot read {src}: {exc.strerror}",
                        hint="check the path on the host") from None
    contents = src.endswith(("/.", "/./")) or src in (".", "./")
    if contents and not stat.S_ISDIR(st.st_mode):
        raise CopyError(f"{src} is not a directory")
    name = "." if contents else os.path.basename(os.path.normpath(os.path.abspath(src)))
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    r, w = os.pipe2(os.O_CLOEXEC)
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(w, "wb") as out, \
                    tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                tar.add(src, arcname=name, filter=_tar_filter(archive))
        except BrokenPipeError:
            pass  # the guest's tar stopped reading; its status says why
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        c, status, err = top.run_tool(uri, store, container,
                                      ("sh", "-c", _RECEIVE, "sh", dest, name, kind),
                                      stdin_fd=r, out_fd=2)
    finally:
        os.close(r)
        worker.join()
    if failure:
        if isinstance(failure[0], OSError):
            raise CopyError(f"cannot read {src}: {failure[0].strerror or failure[0]}") from None
        raise failure[0]
    _check_in(c.name, path, status, err)


def _check_in(name: str, path: str, status: int, err: str) -> None:
    if status == 0:
        return
    if status == 3:
        raise CopyError(f"Could not find the file {path} in container {name}",
                        hint="its parent directory must exist in the container")
    if status == 4:
        raise CopyError(f"cannot overwrite the file {path} in container {name} with a "
                        "directory")
    raise CopyError(f"copying into container {name} failed: "
                    f"{escape(top.last_line(err, status))}")
