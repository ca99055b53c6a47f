"""How large an image may grow, and whether the store has room for what is about to be written.

A layer is small on the wire and can be huge inflated (a 2 MB gzip stream inflates to
2 GiB of zeros; a sparse tar entry declares a terabyte in a few blocks), so sizes are
counted as the bytes stream through, and each check fires before the bytes are kept.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from hyperrun import config
from hyperrun.errors import HyperrunError, InvalidImage

DEFAULT_MAX_SIZE = 32 << 30
ENV_MAX_SIZE = "HYPERRUN_MAX_IMAGE_SIZE"  # overrides images.max_size in config.yaml


def max_image_size() -> int:
    """The largest uncompressed image (the sum of its layers) hyperrun accepts, in bytes."""
    text = os.environ.get(ENV_MAX_SIZE)
    if text:
        return config.parse_size(text, ENV_MAX_SIZE)
    return config.load().max_image_size or DEFAULT_MAX_SIZE


def human(size: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def too_large(label: str, limit: int) -> InvalidImage:
    return InvalidImage(
        f"image {label} is larger than the {human(limit)} limit",
        hint=f"raise images.max_size in {config.config_path()} (or set {ENV_MAX_SIZE}) "
             "if the image is genuine")


class SizeBudget:
    """Bytes an image may still take; charged from several threads during a pull."""

    def __init__(self, label: str, limit: int | None = None) -> None:
        self.label = label
        self.limit = max_image_size() if limit is None else limit
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, size: int) -> None:
        with self._lock:
            self.used += size
            if self.used > self.limit:
                raise too_large(self.label, self.limit)

    def refund(self, size: int) -> None:
        """Give back what a failed attempt charged (a download that is retried)."""
        with self._lock:
            self.used -= size

    def check(self, size: int) -> None:
        """Refuse now if size more bytes would not fit (nothing is charged)."""
        if self.used + size > self.limit:
            raise too_large(self.label, self.limit)


def no_space(where: Path | str) -> HyperrunError:
    return HyperrunError(f"no space left on {where}",
                         hint="free some space there (`hyperrun rmi`, `hyperrun rm`) or "
                              "point HYPERRUN_ROOT at a larger filesystem")


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def ensure_room(directory: Path | str, size: int, where: Path | str) -> None:
    """Refuse before writing size bytes into directory if its filesystem cannot take them."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return  # the write itself will tell
    if size > st.f_bavail * st.f_frsize:
        raise no_space(where)
