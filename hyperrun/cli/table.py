"""Output as docker prints it: tables, human sizes and durations."""

from __future__ import annotations

from collections.abc import Sequence


def humanize_duration(seconds: float) -> str:
    """docker's HumanDuration (go-units), used in the CREATED column."""
    seconds = int(seconds)
    minutes, hours = round(seconds / 60), round(seconds / 3600)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    if minutes == 1:
        return "About a minute"
    if seconds < 3600:
        return f"{seconds // 60} minutes"
    if hours == 1:
        return "About an hour"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} hours"
    if seconds < 14 * 86400:
        return f"{seconds // 86400} days"
    if seconds < 60 * 86400:
        return f"{seconds // (7 * 86400)} weeks"
    if seconds < 730 * 86400:
        return f"{seconds // (30 * 86400)} months"
    return f"{seconds // (365 * 86400)} years"


def human_size(size: float, precision: int = 3) -> str:
    """docker's HumanSizeWithPrecision(size, precision): decimal units, e.g. `4.26MB`.

    Tables use 3 digits; docker's HumanSize (prune totals, `system df`) uses 4.
    """
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.{precision}g}{units[i]}"


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Columns as docker's tabwriter lays them out: min width 10, padding 3."""
    widths = [max(10, max(len(row[i]) for row in rows) + 3) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("".join(cells) + row[-1])
    return "\n".join(lines) + "\n"
