"""What hyperrun prints itself: one line per message, prefixed by its level, escaped."""

from __future__ import annotations

import pytest

from hyperrun import log


def test_logged_warnings_say_warning_not_debug(capsys: pytest.CaptureFixture[str]) -> None:
    log.setup(debug=False)
    log.log.warning("image platform %s does not match", "linux/arm64")
    log.log.debug("not shown without --debug")
    assert capsys.readouterr().err == (
        "hyperrun: warning: image platform linux/arm64 does not match\n")


def test_debug_lines_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    log.setup(debug=True)
    try:
        log.log.debug("connecting")
    finally:
        log.setup(debug=False)
    assert capsys.readouterr().err == "hyperrun: debug: connecting\n"


@pytest.mark.parametrize("hostile", [
    "\x1b[2J\x1b[Hfake prompt",  # clear the screen, move the cursor
    "line one\nhyperrun: forged second line",
    "over\rwrite",
    "\x9b31m",  # C1 control sequence introducer
    "\u2028separator",
])
def test_text_from_outside_cannot_drive_the_terminal(
        hostile: str, capsys: pytest.CaptureFixture[str]) -> None:
    log.error(f"registry said {hostile}", hint=hostile)
    log.warning(hostile)
    err = capsys.readouterr().err
    assert err.count("\n") == 2  # exactly the two lines hyperrun meant to print
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) < 0xa0 or c == "\u2028"
                   for c in err)


def test_escape_keeps_printable_text_and_bounds_length() -> None:
    assert log.escape("plain text, é, 日本") == "plain text, é, 日本"
    assert log.escape("a\\b") == "a\\\\b"  # an escaped form cannot be forged
    assert len(log.escape("x" * 10_000)) < 1100


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    log.setup(debug=True)
    try:
        try:
            raise KeyError("where it failed")
        except KeyError:
            log.log.exception("failed")
    finally:
        log.setup(debug=False)
    err = capsys.readouterr().err
    assert err.startswith("hyperrun: error: failed\nTraceback (most recent call last):")
    assert "KeyError: 'where it failed'" in err


def test_multi_line_debug_messages_stay_readable(capsys: pytest.CaptureFixture[str]) -> None:
    log.setup(debug=True)
    try:
        log.log.debug("domain XML:\n<domain>\nhyperrun: forged\x1b[2J\n</domain>")
    finally:
        log.setup(debug=False)
    assert capsys.readouterr().err == (
        "hyperrun: debug: domain XML:\n    <domain>\n    hyperrun: forged\\x1b[2J\n"
        "    </domain>\n")
