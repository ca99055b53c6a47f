"""Layer blobs: compression detection, inflating, and the diff_id (digest of the plain tar).

Every path that reads a layer's bytes (load, import, pull, unpacking) goes through here.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from hyperrun.digest import Hasher
from hyperrun.errors import InvalidImage
from hyperrun.images import tarsafe
from hyperrun.images.limits import SizeBudget, is_no_space, no_space
from hyperrun.images.model import MEDIA_OCI_LAYER, MEDIA_OCI_LAYER_GZIP
from hyperrun.images.tarsafe import first_line

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"


def layer_diff_id(path: Path, label: str) -> tuple[str, int]:
    """(diff_id, uncompressed size) of a plain or gzip layer blob; zstd is refused."""
    _, found, size = diff_id(path, label, path.name)
    return found, size


class GzipInflater:
    """Inflates a gzip stream of one or more members, at most CHUNK bytes at a time.

    zlib is always called with a max_length, so however much a chunk inflates to (a
    2 MB bomb inflates to 2 GiB) no more than CHUNK bytes of output exist at once.
    """

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.inside = False  # a gzip member has started and not ended

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        pending = True
        while chunk or pending:
            if chunk:
                self.inside = True
            data = self._zlib.decompress(chunk, CHUNK)
            if data:
                yield data
            chunk = self._zlib.unconsumed_tail
            pending = len(data) == CHUNK  # more output may wait inside zlib
            if self._zlib.eof:  # gzip allows several members back to back
                chunk = self._zlib.unused_data
                self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self.inside = pending = False


class LayerDigest:
    """The diff_id of a layer blob, computed from chunks as they stream in.

    zlib and hashlib release the GIL on large buffers, so pulls hashing layers on
    several threads use several cores, and no second pass over the file is needed.
    Every inflated byte is charged to budget (by default the image size limit alone),
    so an oversized layer is refused while it streams.
    """

    def __init__(self, label: str, name: str, budget: SizeBudget | None = None) -> None:
        self.label, self.name = label, name
        self.media_type: str | None = None
        self.budget = budget if budget is not None else SizeBudget(label)
        self._sha = Hasher()
        self._size = 0
        self._head = b""
        self._inflater: GzipInflater | None = None

    @property
    def inflated(self) -> int:
        """Uncompressed bytes seen (and charged to the budget) so far."""
        return self._size

    def update(self, chunk: bytes) -> None:
        if self.media_type is None:
            self._head += chunk
            if len(self._head) < len(ZSTD_MAGIC):
                return
            chunk, self._head = self._head, b""
            self._detect(chunk)
        if self._inflater is None:
            self._take(chunk)
            return
        try:
            for data in self._inflater.feed(chunk):
                self._take(data)
        except zlib.error as exc:
            raise self._invalid(str(exc)) from None

    def _take(self, data: bytes) -> None:
        self.budget.charge(len(data))
        self._sha.update(data)
        self._size += len(data)

    def _detect(self, head: bytes) -> None:
        if head.startswith(ZSTD_MAGIC):
            raise InvalidImage(f"{self.label}: layer {self.name} is zstd-compressed",
                               hint="hyperrun unpacks plain and gzip tar layers only")
        if head.startswith(GZIP_MAGIC):
            self.media_type = MEDIA_OCI_LAYER_GZIP
            self._inflater = GzipInflater()
        else:
            self.media_type = MEDIA_OCI_LAYER

    def finish(self) -> tuple[str, int]:
        """(diff_id, uncompressed size) once every chunk has been given."""
        if self.media_type is None:  # a blob shorter than the longest magic number
            head, self._head = self._head, b""
            self._detect(head)
            self.update(head)
        if self._inflater is not None and self._inflater.inside:
            raise self._invalid("compressed data ended before the end-of-stream marker")
        return self._sha.digest(), self._size

    def _invalid(self, why: str) -> InvalidImage:
        return InvalidImage(f"{self.label}: layer {self.name} is not valid gzip: {why}")


def diff_id(path: Path, label: str, name: str,
            budget: SizeBudget | None = None) -> tuple[str, str, int]:
    """(media type, diff_id, uncompressed size) of a layer blob."""
    digest = LayerDigest(label, name, budget)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    found, size = digest.finish()
    assert digest.media_type is not None
    return digest.media_type, found, size


def decompress_to(src: IO[bytes], dest: Path, label: str, budget: SizeBudget,
                  where: Path | str) -> tuple[str, int]:
    """Write the seekable src to dest uncompressed (gzip, bzip2, xz or plain); (digest, size).

    Each read returns at most CHUNK bytes, and each is charged to budget before it is
    written; where names the store in a "no space left" error.
    """
    head = src.read(6)
    src.seek(0)
    stream: io.BufferedIOBase | IO[bytes]
    if head.startswith(GZIP_MAGIC):
        stream = gzip.GzipFile(fileobj=src, mode="rb")
    elif head.startswith(BZIP2_MAGIC):
        stream = bz2.BZ2File(src)
    elif head.startswith(XZ_MAGIC):
        stream = lzma.LZMAFile(src)
    elif head.startswith(ZSTD_MAGIC):
        raise InvalidImage(f"{label} is zstd-compressed", hint="decompress it first (unzstd)")
    else:
        stream = src
    with open(dest, "wb") as out:
        return copy_hashed(lambda: _read(stream, label), out, where, budget)


def copy_hashed(read: Callable[[], bytes], out: IO[bytes], where: Path | str,
                budget: SizeBudget | None = None) -> tuple[str, int]:
    """Copy read()'s chunks to out until it returns b"", hashing them; (digest, size).

    Each chunk is charged to budget (if any) before it is written; running out of space
    is reported as such, naming where (the store).
    """
    sha, size = Hasher(), 0
    try:
        while chunk := read():
            if budget is not None:
                budget.charge(len(chunk))
            sha.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()  # a full disk shows here too, not later at close
    except OSError as exc:
        if is_no_space(exc):
            raise no_space(where) from None
        raise
    return sha.digest(), size


def _read(stream: io.BufferedIOBase | IO[bytes], label: str) -> bytes:
    try:
        return stream.read(CHUNK)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise InvalidImage(f"{label}: corrupt compressed data: {first_line(exc)}",
                           hint="the file is damaged or not what it claims to be") from None


def check_tar(path: Path, label: str, budget: SizeBudget) -> None:
    """Reject a file that is not a tar archive before it becomes an image.

    The files it declares (a sparse entry declares its full size) are charged to budget,
    so a rootfs that would unpack beyond the image size limit is refused here.
    """
    try:
        with tarsafe.open_tar(label, name=path, mode="r:") as tar:
            for member in tarsafe.members(tar, label):
                if member.isreg():
                    budget.charge(member.size)
    except tarsafe.READ_ERRORS as exc:
        raise InvalidImage(f"{label} is not a tar archive: {first_line(exc)}",
                           hint="`hyperrun import` takes a root filesystem tarball") from None


class Gunzip:
    """Inflate a gzip file on a second thread, feeding the tar reader through a pipe.

    zlib releases the GIL while it inflates, so decompression runs on another core while
    this thread applies entries: most of a layer's unpacking time is one or the other.
    """

    def __init__(self, src: IO[bytes]) -> None:
        rfd, self._wfd = os.pipe()
        self.reader = os.fdopen(rfd, "rb", buffering=CHUNK)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._inflate, args=(src,), daemon=True)

    def __enter__(self) -> IO[bytes]:
        self._thread.start()
        return self.reader

    def __exit__(self, *exc_info: object) -> None:
        self.reader.close()  # a writer still blocked on the pipe gets EPIPE and stops
        self._thread.join()

    def raise_error(self, name: str) -> None:
        self.reader.close()  # the tar reader may have stopped early: unblock the writer
        self._thread.join()
        if self.error is not None and not isinstance(self.error, BrokenPipeError):
            raise InvalidImage(f"layer {name} is not valid gzip: {first_line(self.error)}",
                               hint="the image is corrupt") from None

    def _inflate(self, src: IO[bytes]) -> None:
        try:
            with os.fdopen(self._wfd, "wb") as out:
                inflater = GzipInflater()
                while chunk := src.read(CHUNK):
                    for data in inflater.feed(chunk):
                        out.write(data)
                if inflater.inside:
                    raise EOFError("compressed data ended before the end-of-stream marker")
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self.error = exc
