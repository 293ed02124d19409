"""
The README and the documentation pages, read by the tests that run their
examples: a test finds an example by the heading of the section that holds it,
on whichever page that section lives.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import BASE_DIR

README = BASE_DIR / "README.md"
DOCS = BASE_DIR / "docs"
HEADING = re.compile(r"^(#{1,6}) (.+)$")
FENCE = re.compile(r"^```(\w*)")


def pages() -> list[Path]:
    """The README, then every page of docs/ (its build and sources left out)."""
    return [README, *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)]


@dataclass(frozen=True)
class Block:
    """A fenced code block, with the heading of the section it sits in."""

    page: Path
    heading: str
    language: str
    text: str


def blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    heading = ""
    language: str | None = None
    lines: list[str] = []
    for line in page.read_text().splitlines():
        fence = FENCE.match(line)
        if language is None and fence:
            language, lines = fence.group(1), []
        elif language is not None and line == "```":
            found.append(Block(page, heading, language, "\n".join(lines) + "\n"))
            language = None
        elif language is not None:
            lines.append(line)
        elif match := HEADING.match(line):
            heading = match.group(2)
    return found


def section(title: str) -> str:
    """
    The text of the one section headed `title`, on any page, up to the next
    heading of its level or above: its subsections are part of it.
    """
    found = []
    for page in pages():
        lines = page.read_text().splitlines()
        in_fence = False
        for index, line in enumerate(lines):
            if line.startswith("```"):
                in_fence = not in_fence
            elif not in_fence and (match := HEADING.match(line)) and match.group(2) == title:
                found.append(_until_next_heading(lines, index, len(match.group(1))))
    assert len(found) == 1, f"{len(found)} sections are headed {title!r}"
    return found[0]


def _until_next_heading(lines: list[str], start: int, level: int) -> str:
    in_fence = False
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (match := HEADING.match(line)) and len(match.group(1)) <= level:
            return "\n".join(lines[start:index]) + "\n"
    return "\n".join(lines[start:]) + "\n"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
