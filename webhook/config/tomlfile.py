"""TOML files with line numbers, so that config and rules errors can name the line.

``tomllib`` reports syntax errors with a line but forgets where each value came from, so
``TomlFile.line_of`` finds it again: the n-th ``[[table]]`` / ``[table]`` header, then the key
inside it (dotted keys such as ``reply.text`` are matched on their first part too).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.errors import ConfigError

__all__ = ["TomlFile", "load_toml", "known_keys"]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"]+)\s*(\.|=)")
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


@dataclass(frozen=True, slots=True)
class TomlFile:
    path: str
    data: dict[str, Any]
    lines: tuple[str, ...]

    def line_of(self, table: str | None = None, index: int | None = None,
                key: str | None = None) -> int | None:
        """Line (1-based) of ``key`` in the ``index``-th ``[[table]]`` (or ``[table]``)."""
        start, end = 0, len(self.lines)
        if table is not None:
            seen, start = -1, None
            for number, text in enumerate(self.lines):
                header = _HEADER.match(text)
                if header and header.group(2).replace('"', "") == table:
                    seen += 1
                    if index is None or seen == index:
                        start = number
                        break
            if start is None:
                return None
            end = next((n for n in range(start + 1, len(self.lines)) if _HEADER.match(self.lines[n])),
                       len(self.lines))
            if key is None:
                return start + 1
        if key is None:
            return None
        if "." in key:   # a dotted key written out (reply.on_error = ...) before its table
            dotted = re.compile(r"^\s*" + r"\s*\.\s*".join(map(re.escape, key.split("."))) + r"\s*=")
            for number in range(start, end):
                if dotted.match(self.lines[number]):
                    return number + 1
        first = key.split(".")[0]
        for number in range(start, end):
            found = _KEY.match(self.lines[number])
            if found and found.group(1).strip('"') == first:
                return number + 1
        return start + 1 if table is not None else None

    def error(self, problem: str, *, table: str | None = None, index: int | None = None,
              key: str | None = None) -> ConfigError:
        """A ConfigError that names this file and the line of ``key``."""
        return ConfigError(problem, file=self.path, line=self.line_of(table, index, key), key=key)


def known_keys(raw: Any, known: Sequence[str], fail: Callable[..., ConfigError], *,
               not_table: str = "must be a table") -> dict[str, Any]:
    """``raw``, a table whose keys are all ``known``; else ``fail(problem[, key])``'s error."""
    if not isinstance(raw, dict):
        raise fail(not_table)
    unknown = next((key for key in raw if key not in known), None)
    if unknown is not None:
        raise fail(f"unknown key (known: {', '.join(known)})", unknown)
    return raw


def load_toml(path: str | Path) -> TomlFile:
    """Read and parse ``path``; syntax errors become a ConfigError naming file and line."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read file ({exc.strerror or exc})", file=name) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("file is not valid UTF-8", file=name) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = _TOML_LINE.search(message)
        raise ConfigError(f"TOML syntax error: {_TOML_LINE.sub('', message).strip()}", file=name,
                          line=int(at.group(1)) if at else None) from None
    return TomlFile(name, data, tuple(text.splitlines()))
