"""--format templates: the small, safe part of Go's text/template that docker users write.

Supported: literal text, `{{.A.B}}` (a field path; `{{.}}` is the whole object) and
`{{json .A}}`, any number of them, with `{{-`/`-}}` trimming the whitespace beside them.
Everything else (pipelines, functions, range, if, variables) is refused at parse time
with a usage error: templates come from the command line, so nothing is ever evaluated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hyperrun import log
from hyperrun.cli.table import format_table
from hyperrun.errors import UsageError

_PATH_RE = re.compile(r"\.|(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
HINT = "supported: text, {{.Field.Path}} and {{json .Field}}"
NO_VALUE = "<no value>"  # what Go prints for a key a map does not have


@dataclass(frozen=True)
class _Action:
    path: tuple[str, ...]
    json: bool


@dataclass(frozen=True)
class Template:
    parts: tuple[str | _Action, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[str | _Action] = []
        rest = text
        while rest:
            start = rest.find("{{")
            if start < 0:
                parts.append(rest)
                break
            end = rest.find("}}", start + 2)
            if end < 0:
                raise UsageError(f"template {text!r}: unclosed action", hint=HINT)
            literal, inner = rest[:start], rest[start + 2:end]
            rest = rest[end + 2:]
            if inner.startswith("- ") or inner == "-":  # `{{- ` trims before it
                literal, inner = literal.rstrip(), inner[1:]
            if inner.endswith(" -"):  # ` -}}` trims after it
                rest, inner = rest.lstrip(), inner[:-1]
            if literal:
                parts.append(literal)
            parts.append(_action(text, inner))
        return cls(tuple(parts))

    @property
    def fields(self) -> tuple[tuple[str, ...], ...]:
        return tuple(p.path for p in self.parts if isinstance(p, _Action))

    def render(self, data: Mapping[str, Any], strict: bool = False,
               escape: Callable[[str], str] = lambda text: log.escape(text, 1 << 20)) -> str:
        """Fill the template from data. strict: a field data lacks is an error, not
        `<no value>` (for fixed sets of fields such as ps's). Text values pass through
        escape, JSON through json.dumps: neither can drive the terminal."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _lookup(data, part.path, strict)
            if part.json:
                out.append(json.dumps(value, separators=(",", ":")))
            else:
                out.append(escape(_text(value)) if value is not _MISSING else NO_VALUE)
        return "".join(out)


_MISSING = object()


def _action(template: str, inner: str) -> _Action:
    words = inner.split()
    if len(words) == 1 and _PATH_RE.fullmatch(words[0]):
        return _Action(_split(words[0]), json=False)
    if len(words) == 2 and words[0] == "json" and _PATH_RE.fullmatch(words[1]):
        return _Action(_split(words[1]), json=True)
    raise UsageError(f"template {template!r}: unsupported action {{{{{inner.strip()}}}}}",
                     hint=HINT)


def _split(path: str) -> tuple[str, ...]:
    return tuple(name for name in path.split(".") if name)


def _lookup(data: Any, path: tuple[str, ...], strict: bool) -> Any:
    value = data
    for i, name in enumerate(path):
        where = "." + ".".join(path[:i + 1])
        if not isinstance(value, Mapping):
            raise UsageError(f"template: cannot take {where}: "
                             f"{'.' + '.'.join(path[:i])} is not an object",
                             hint="check the field path against the JSON output")
        if name not in value:
            if strict:
                known = ", ".join(sorted(value))
                raise UsageError(f"template: no field {where}", hint=f"fields: {known}")
            return _MISSING
        value = value[name]
    return value


def _text(value: Any) -> str:
    """A value as Go's fmt prints it in a template (%v)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return "[" + " ".join(_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_text(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def unescape(text: str) -> str:
    """docker reads `\\t` and `\\n` in ps/images formats as a tab and a newline."""
    return text.replace("\\t", "\t").replace("\\n", "\n")


def print_rows(rows: list[dict[str, Any]], fmt: str, headers: Mapping[str, str]) -> None:
    """`--format` for listings: `json` (one object a line), `table TEMPLATE` or TEMPLATE.

    headers names every field's column in a `table` format (docker's: ID -> CONTAINER ID).
    """
    if fmt == "json":
        for row in rows:
            print(json.dumps(row, sort_keys=True, separators=(",", ":")))
        return
    is_table = fmt.startswith("table")
    template = Template.parse(unescape(fmt[len("table"):].strip() if is_table else fmt))
    if not rows and not is_table:
        return
    lines = [template.render(row, strict=True) for row in rows]
    if not is_table:
        print("\n".join(lines))
        return
    cells = [line.split("\t") for line in [template.render(headers, strict=True), *lines]]
    width = max(len(c) for c in cells)
    print(format_table([c + [""] * (width - len(c)) for c in cells]), end="")
