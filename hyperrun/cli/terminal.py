"""The user's terminal: raw mode for -t sessions and its window size."""

from __future__ import annotations

import contextlib
import os
import termios
import tty
from collections.abc import Iterator

from hyperrun.spec import WinSize


def window_size(fd: int) -> WinSize | None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return WinSize(rows=size.lines, cols=size.columns)


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Put a terminal in raw mode so keys (Ctrl-C included) reach the guest untouched.

    The previous settings come back on every exit path, exceptions included.
    """
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class UserTerminal:
    """Our stdin's terminal if it is one (raw mode, resizes followed), else stdout's size."""

    def __init__(self) -> None:
        self.fd = 0 if os.isatty(0) else None
        self.follows_resizes = self.fd is not None

    def size(self) -> WinSize | None:
        return window_size(self.fd if self.fd is not None else 1)

    def raw(self) -> contextlib.AbstractContextManager[None]:
        return raw_mode(self.fd) if self.fd is not None else contextlib.nullcontext()
