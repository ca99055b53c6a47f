"""User-facing messages on stderr, the debug logger, and escaping of text from outside."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("hyperrun")

_LEVEL_PREFIX = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
                 logging.ERROR: "error", logging.CRITICAL: "error"}


def escape(text: str, limit: int = 1000) -> str:
    """Text from outside (a registry, an archive, the guest) made safe to print on a terminal.

    Control characters (escape sequences, carriage returns, newlines, C1 controls) become
    visible `\\x..` escapes, so a hostile string cannot move the cursor, rewrite earlier
    output or fake another line; very long text is cut at limit characters.
    """
    out = []
    for ch in text[:limit]:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or ch in "\u2028\u2029":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        elif ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch)
    if len(text) > limit:
        out.append("…")
    return "".join(out)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = _LEVEL_PREFIX.get(record.levelno, "debug")
        # A multi-line message (a domain's XML) stays readable: its further lines are
        # indented, so none of them can pass for a line of hyperrun's own.
        lines = [escape(part, limit=100_000) for part in record.getMessage().split("\n")]
        line = f"hyperrun: {prefix}: " + "\n    ".join(lines)
        if record.exc_info:  # --debug's traceback: our own code's, printed as it is
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.WARNING)


def warning(message: str) -> None:
    print(f"hyperrun: warning: {escape(message)}", file=sys.stderr, flush=True)


def error(message: str, hint: str | None = None, details: str | None = None) -> None:
    """One line: the message and, in brackets, what to do about it; details may follow.

    The message and hint are escaped here, so text from outside that reached an error
    message can never drive the terminal; details (a console tail) keep their newlines.
    """
    line = f"hyperrun: {escape(message)}"
    if hint:
        line += f" (hint: {escape(hint)})"
    print(line, file=sys.stderr, flush=True)
    if details:
        lines = details.rstrip("\n").split("\n")
        print("\n".join(escape(x, limit=2000) for x in lines), file=sys.stderr, flush=True)
