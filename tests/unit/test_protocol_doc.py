"""docs/protocol.md stays true to the code: every section the code cites exists, and the test
vectors in the doc are the bytes the tests use."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import vectors

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs/protocol.md"
CODE_DIRS = ("webhook", "handlers", "tests", "bench")
_CITE = re.compile(r"§(\d+(?:\.\d+)?)(?:-§?(\d+(?:\.\d+)?))?")
_HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)[ .]", re.M)


def _sections() -> set[str]:
    return set(_HEADING.findall(DOC.read_text(encoding="utf-8")))


def _code_files() -> list[Path]:
    return sorted(path for top in CODE_DIRS for path in (ROOT / top).rglob("*.py"))


def _citing_files() -> list[Path]:
    return [path for path in _code_files()
            if "docs/protocol.md" in path.read_text(encoding="utf-8")]


def _cited(text: str) -> Iterator[str]:
    """The section numbers ``text`` cites: "§2.6", "§3.1-§3.5", "§4.2-4.3"; not those of
    another file ("DESIGN.md §1")."""
    for match in _CITE.finditer(text):
        before = text[:match.start()].rstrip()
        if before.endswith(".md") and not before.endswith("docs/protocol.md"):
            continue
        yield from (number for number in match.groups() if number)


def test_code_cites_the_doc_by_its_path() -> None:
    stale = [f"{path.relative_to(ROOT)}:{number}"
             for path in _code_files()
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"(?<![/\w])protocol\.md", line)]
    assert stale == []


def test_every_cited_section_exists() -> None:
    sections = _sections()
    missing = [f"{path.relative_to(ROOT)}: §{number}"
               for path in _citing_files()
               for number in _cited(path.read_text(encoding="utf-8"))
               if number not in sections]
    assert _citing_files() and missing == []


@pytest.mark.parametrize("name", ["V1_APPID", "V1_ENCRYPT", "V1_MESSAGE", "V1_REPLY",
                                  "XML_APPID", "XML_REPLY", "V3_KEY", "V3_APPID", "V3_ENCRYPT",
                                  "V3_MESSAGE"])
def test_vectors_in_the_doc_are_the_ones_tested(name: str) -> None:
    value = getattr(vectors, name)
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    assert text in DOC.read_text(encoding="utf-8")
