"""Reading untrusted tar archives with tarfile without letting headers take the memory.

tarfile reads some headers whole into memory before it looks at them: PAX extended and
global headers, GNU long names and link names, the sparse maps of GNU sparse files. A
3 MB gzip layer can declare a 3 GiB PAX header; such headers can also be chained without
end (tarfile follows each chain by recursion). SafeTarInfo checks every header as it is
parsed, before any of that data is read, and `members` turns everything odd that tarfile
can raise while parsing headers into one InvalidImage.
"""

from __future__ import annotations

import gzip
import lzma
import re
import tarfile
import zlib
from collections.abc import Iterator
from typing import Any

from hyperrun.errors import InvalidImage

MAX_SPECIAL_HEADER = 1 << 20  # real PAX records and long names are a few hundred bytes
MAX_HEADER_CHAIN = 8  # headers (PAX, long name, long link) in front of one member
MAX_SPARSE_BLOCKS = 1 << 16  # regions of one sparse file
_SPECIAL = {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
            tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
# What tarfile (and the decompressors under it) raise for malformed input.
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError,
               ValueError, UnicodeError, OverflowError, IndexError, RecursionError)


class UnsafeHeader(Exception):
    """A header hyperrun refuses to let tarfile process."""


class SafeTarInfo(tarfile.TarInfo):
    """A TarInfo whose parsing refuses oversized, chained or negative headers."""

    @classmethod
    def fromtarfile(cls, tar: Any) -> Any:
        depth = getattr(tar, "_hyperrun_depth", 0)
        if depth >= MAX_HEADER_CHAIN:
            raise UnsafeHeader(f"more than {MAX_HEADER_CHAIN} extended headers in a row")
        tar._hyperrun_depth = depth + 1
        try:
            return super().fromtarfile(tar)
        finally:
            tar._hyperrun_depth = depth

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Any:
        info = super().frombuf(buf, encoding, errors)
        if info.size < 0:
            raise UnsafeHeader(f"header of {info.name[:120]!r} has a negative size")
        if info.type in _SPECIAL and info.size > MAX_SPECIAL_HEADER:
            raise UnsafeHeader(f"a {_kind(info.type)} header of {info.size} bytes "
                               f"(at most {MAX_SPECIAL_HEADER})")
        return info

    def _apply_pax_info(self, pax_headers: Any, encoding: str, errors: str) -> None:
        super()._apply_pax_info(pax_headers, encoding, errors)  # type: ignore[misc]
        if self.size < 0:
            raise UnsafeHeader(f"PAX header gives {self.name[:120]!r} a negative size")

    def _proc_pax(self, tar: Any) -> Any:
        """Check the records before tarfile's own parser sees them.

        Python 3.11's parser searches the records with regular expressions that take
        quadratic time on long runs of digits (CVE-2024-6232): a 1 MiB header of digits
        takes minutes. The records are read and checked here, then handed to tarfile.
        """
        blocks = self._block(self.size)  # type: ignore[attr-defined]
        data = tar.fileobj.read(blocks)
        if len(data) != blocks:
            raise UnsafeHeader("a truncated PAX header")
        _check_pax_records(data[:self.size])
        real = tar.fileobj
        tar.fileobj = _Replay(data, real)
        try:
            return super()._proc_pax(tar)  # type: ignore[misc]
        finally:
            tar.fileobj = real

    def _proc_sparse(self, tar: Any) -> Any:
        """tarfile's GNU sparse reader, with the count of extension blocks bounded."""
        structs, isextended, origsize = self._sparse_structs  # type: ignore[attr-defined]
        del self._sparse_structs  # type: ignore[attr-defined]
        while isextended:
            buf = tar.fileobj.read(tarfile.BLOCKSIZE)
            if len(buf) != tarfile.BLOCKSIZE:
                raise UnsafeHeader("a GNU sparse header is truncated")
            for pos in range(0, 21 * 24, 24):
                try:
                    offset = _nti(buf[pos:pos + 12])
                    numbytes = _nti(buf[pos + 12:pos + 24])
                except tarfile.HeaderError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
            if len(structs) > MAX_SPARSE_BLOCKS:
                raise UnsafeHeader(f"a sparse file of more than {MAX_SPARSE_BLOCKS} regions")
            isextended = bool(buf[504])
        self.sparse = structs
        self.offset_data = tar.fileobj.tell()
        tar.offset = self.offset_data + self._block(self.size)  # type: ignore[attr-defined]
        if origsize < 0:
            raise UnsafeHeader(f"sparse file {self.name[:120]!r} has a negative size")
        self.size = origsize
        return self

    def _proc_gnusparse_10(self, next: Any, pax_headers: Any, tar: Any) -> None:
        """tarfile's reader of a PAX 1.0 sparse map, bounded in entries and line length."""
        buf = tar.fileobj.read(tarfile.BLOCKSIZE)
        numbers: list[int] = []
        wanted: int | None = None
        while wanted is None or len(numbers) < wanted:
            if b"\n" not in buf:
                more = tar.fileobj.read(tarfile.BLOCKSIZE)
                if not more or len(buf) > 64:
                    raise UnsafeHeader("a sparse map is malformed")
                buf += more
                continue
            line, buf = buf.split(b"\n", 1)
            value = int(line)
            if wanted is None:
                if not 0 <= value <= MAX_SPARSE_BLOCKS:
                    raise UnsafeHeader(f"a sparse map of {value} regions")
                wanted = value * 2
            else:
                numbers.append(value)
        next.offset_data = tar.fileobj.tell()
        next.sparse = list(zip(numbers[::2], numbers[1::2], strict=True))


class _Replay:
    """A file object that returns data already read, then reads on from the real one."""

    def __init__(self, data: bytes, real: Any) -> None:
        self._data, self._real = data, real

    def read(self, size: int = -1) -> bytes:
        if not self._data:
            return self._real.read(size)  # type: ignore[no-any-return]
        if size < 0 or size >= len(self._data):
            head, self._data = self._data, b""
            more = size - len(head) if size >= 0 else -1
            return head + (self._real.read(more) if more else b"")
        head, self._data = self._data[:size], self._data[size:]
        return head

    def tell(self) -> int:
        return self._real.tell() - len(self._data)  # type: ignore[no-any-return]


MAX_DIGIT_RUN = 64  # longer runs of digits are what makes tarfile's PAX regexes quadratic
_DIGIT_RUN = re.compile(rb"[0-9]{%d}" % (MAX_DIGIT_RUN + 1))


def _check_pax_records(data: bytes) -> None:
    """Refuse PAX data that is not a sequence of well-formed `LEN KEY=VALUE\n` records."""
    if _DIGIT_RUN.search(data):
        raise UnsafeHeader(f"a PAX header with more than {MAX_DIGIT_RUN} digits in a row")
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # some writers pad the records with NULs
            if data[pos:].strip(b"\0"):
                raise UnsafeHeader("a malformed PAX header")
            return
        space = data.find(b" ", pos, pos + 8)
        if space <= pos or not data[pos:space].isdigit():
            raise UnsafeHeader("a malformed PAX header")
        end = pos + int(data[pos:space])
        if end > len(data) or end <= space + 2 or data[end - 1] != 0x0A \
                or b"=" not in data[space + 1:end]:
            raise UnsafeHeader("a malformed PAX header")
        pos = end


def _nti(field: bytes) -> int:
    return tarfile.nti(field)  # type: ignore[attr-defined,no-any-return]


def _kind(type_: bytes) -> str:
    if type_ in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
        return "GNU long name"
    return "PAX"


def open_tar(label: str, **kwargs: Any) -> tarfile.TarFile:
    """tarfile.open with SafeTarInfo; parse failures become InvalidImage about label."""
    try:
        return tarfile.open(tarinfo=SafeTarInfo, **kwargs)
    except UnsafeHeader as exc:
        raise refused(label, exc) from None


def members(tar: tarfile.TarFile, label: str) -> Iterator[tarfile.TarInfo]:
    """The members of tar one by one, without tarfile keeping them all in a list.

    Errors of the tar format itself become InvalidImage; errors raised by the caller
    while it handles a member pass through untouched.
    """
    while True:
        try:
            member = tar.next()
        except UnsafeHeader as exc:
            raise refused(label, exc) from None
        except READ_ERRORS as exc:
            raise InvalidImage(f"{label} is not a readable tar archive: {first_line(exc)}",
                               hint="the image is corrupt or uses a compression hyperrun "
                                    "does not support (zstd)") from None
        if member is None:
            return
        tar.members.clear()  # type: ignore[attr-defined]  # nothing looks members up again
        yield member


def refused(label: str, exc: UnsafeHeader) -> InvalidImage:
    return InvalidImage(f"{label}: refusing a tar archive with {exc}",
                        hint="the image is malformed or malicious; nothing was written")


def first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
