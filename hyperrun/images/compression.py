"""Layer blobs: compression detection, inflating, and the diff_id (digest of the plain tar).

Every path that reads a layer's bytes (load, import, pull, unpacking) goes through here.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
import threading
import zlib
from pathlib import Path
from typing import IO, Any

from hyperrun.digest import Hasher
from hyperrun.errors import InvalidImage
from hyperrun.images.model import MEDIA_OCI_LAYER, MEDIA_OCI_LAYER_GZIP

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"


def layer_diff_id(path: Path, label: str) -> tuple[str, int]:
    """(diff_id, uncompressed size) of a plain or gzip layer blob; zstd is refused."""
    _, found, size = diff_id(path, label, path.name)
    return found, size


class LayerDigest:
    """The diff_id of a layer blob, computed from chunks as they stream in.

    zlib and hashlib release the GIL on large buffers, so pulls hashing layers on
    several threads use several cores, and no second pass over the file is needed.
    """

    def __init__(self, label: str, name: str) -> None:
        self.label, self.name = label, name
        self.media_type: str | None = None
        self._sha = Hasher()
        self._size = 0
        self._head = b""
        self._inflater: Any = None
        self._inside = False  # a gzip member has started and not ended

    def update(self, chunk: bytes) -> None:
        if self.media_type is None:
            self._head += chunk
            if len(self._head) < len(ZSTD_MAGIC):
                return
            chunk, self._head = self._head, b""
            self._detect(chunk)
        if self._inflater is None:
            self._sha.update(chunk)
            self._size += len(chunk)
            return
        try:
            while chunk:
                self._inside = True
                data = self._inflater.decompress(chunk)
                self._sha.update(data)
                self._size += len(data)
                chunk = b""
                if self._inflater.eof:  # gzip allows several members back to back
                    chunk = self._inflater.unused_data
                    self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    self._inside = False
        except zlib.error as exc:
            raise self._invalid(str(exc)) from None

    def _detect(self, head: bytes) -> None:
        if head.startswith(ZSTD_MAGIC):
            raise InvalidImage(f"{self.label}: layer {self.name} is zstd-compressed",
                               hint="hyperrun unpacks plain and gzip tar layers only")
        if head.startswith(GZIP_MAGIC):
            self.media_type = MEDIA_OCI_LAYER_GZIP
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            self.media_type = MEDIA_OCI_LAYER

    def finish(self) -> tuple[str, int]:
        """(diff_id, uncompressed size) once every chunk has been given."""
        if self.media_type is None:  # a blob shorter than the longest magic number
            head, self._head = self._head, b""
            self._detect(head)
            self.update(head)
        if self._inside:
            raise self._invalid("compressed data ended before the end-of-stream marker")
        return self._sha.digest(), self._size

    def _invalid(self, why: str) -> InvalidImage:
        return InvalidImage(f"{self.label}: layer {self.name} is not valid gzip: {why}")


def diff_id(path: Path, label: str, name: str) -> tuple[str, str, int]:
    """(media type, diff_id, uncompressed size) of a layer blob."""
    digest = LayerDigest(label, name)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    found, size = digest.finish()
    assert digest.media_type is not None
    return digest.media_type, found, size


def decompress_to(src: IO[bytes], dest: Path, label: str) -> tuple[str, int]:
    """Write the seekable src to dest uncompressed (gzip, bzip2, xz or plain); (digest, size)."""
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
    sha, size = Hasher(), 0
    try:
        with open(dest, "wb") as out:
            while chunk := stream.read(CHUNK):
                sha.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise InvalidImage(f"{label}: corrupt compressed data: {exc}") from None
    return sha.digest(), size


def check_tar(path: Path, label: str) -> None:
    """Reject a file that is not a tar archive before it becomes an image."""
    try:
        with tarfile.open(path, "r:") as tar:
            for _ in tar:
                pass
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidImage(f"{label} is not a tar archive: {exc}",
                           hint="`hyperrun import` takes a root filesystem tarball") from None


def first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


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
        self._thread.join()
        if self.error is not None and not isinstance(self.error, BrokenPipeError):
            raise InvalidImage(f"layer {name} is not valid gzip: {first_line(self.error)}",
                               hint="the image is corrupt") from None

    def _inflate(self, src: IO[bytes]) -> None:
        try:
            with os.fdopen(self._wfd, "wb") as out:
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                inside = False  # the current gzip member has started but not ended
                while chunk := src.read(CHUNK):
                    while chunk:
                        inside = True
                        out.write(inflater.decompress(chunk))
                        chunk = b""
                        if inflater.eof:  # gzip allows several members back to back
                            chunk = inflater.unused_data
                            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                            inside = False
                if inside:
                    raise EOFError("compressed data ended before the end-of-stream marker")
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self.error = exc
