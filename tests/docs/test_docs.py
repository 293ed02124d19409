"""
The documentation builds without a warning, and what it shows runs: every
Python example sits in a section that a test reads and runs, the README's
short examples are lines of those, every command example is accepted by the
command's own parser, and every link of the README leads somewhere.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command, get_commands, load_command_class

from tests.conftest import BASE_DIR
from tests.docs.pages import README, Block, blocks, pages, python_blocks, section

# The section of the README whose examples are lines quoted from the docs'
# examples, in their order, each still a whole statement.
README_EXAMPLES = "What it does, one example each"
COMMAND_LINE = re.compile(r"^\s*(?:\$ )?(?:python manage\.py|\./scripts/manage\.sh) (.+)$")
# Commands whose examples run here as they are written: they only read.
READ_ONLY = {("jobs", "list"), ("jobs", "queues"), ("schedules", "--runs")}


def headings_read_by_tests() -> set[str]:
    """The headings whose sections the tests read with section("...")."""
    found: set[str] = set()
    for path in (BASE_DIR / "tests").rglob("*.py"):
        text = path.read_text()
        found.update(re.findall(r'\bsection\(\s*"([^"]+)"', text))
        found.update(re.findall(r'^README_SECTION = "([^"]+)"', text, re.MULTILINE))
    return found


def documented_python() -> list[Block]:
    readme_examples = section(README_EXAMPLES)
    return [
        block
        for page in pages()
        for block in blocks(page)
        if block.language == "python" and not (page == README and block.text in readme_examples)
    ]


@pytest.mark.processes
def test_the_docs_build_without_a_warning(tmp_path: Path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(BASE_DIR / "docs"),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    commands = (tmp_path / "html" / "reference" / "commands.html").read_text()
    assert "--shutdown-timeout" in commands
    assert "manage.py jobs queues pause" in commands
    assert "jobs_queue_depth" in (tmp_path / "html" / "reference" / "metrics.html").read_text()


def test_every_python_example_is_in_a_section_that_a_test_runs():
    tested = headings_read_by_tests()
    untested = [
        f"{b.page.relative_to(BASE_DIR)}: {b.heading}"
        for b in documented_python()
        if b.heading not in tested
    ]
    assert untested == []


def test_the_readmes_short_examples_are_lines_of_the_tested_examples():
    tested = headings_read_by_tests()
    sources = [
        [line.strip() for line in block.text.splitlines()]
        for block in documented_python()
        if block.heading in tested
    ]
    examples = python_blocks(section(README_EXAMPLES))
    assert len(examples) >= 8
    for example in examples:
        compile(example, "README.md", "exec")
        lines = [line.strip() for line in example.splitlines()]
        assert any(in_order(lines, source) for source in sources), (
            f"not lines of a run example, in its order:\n{example}"
        )


def in_order(lines: list[str], source: list[str]) -> bool:
    """Whether `lines` are lines of `source`, in the same order (others may lie between)."""
    remaining = iter(source)
    return all(line in remaining for line in lines)


def command_examples() -> list[tuple[str, list[str]]]:
    found = []
    for page in pages():
        for line in page.read_text().splitlines():
            if match := COMMAND_LINE.match(line):
                words = shlex.split(match.group(1), comments=True)
                found.append((f"{page.name}: {line.strip()}", words))
    return found


def test_the_docs_show_the_commands_at_work():
    named = {words[0] for _, words in command_examples()}
    assert {"runworker", "runscheduler", "jobs", "schedules", "migrate"} <= named


@pytest.mark.parametrize(("where", "words"), command_examples(), ids=lambda v: str(v)[:60])
@pytest.mark.django_db
def test_every_command_example_is_accepted_by_its_command(where: str, words: list[str]):
    name, *arguments = words
    command = load_command_class(get_commands()[name], name)
    parser = command.create_parser("manage.py", name)
    try:
        parser.parse_args(arguments)
    except SystemExit:
        pytest.fail(f"{where}: manage.py {name} refuses {arguments}")
    if (name, arguments[0] if arguments else "") in READ_ONLY:
        call_command(name, *arguments)


def test_every_link_of_the_readme_leads_to_a_file_or_a_heading():
    text = README.read_text()
    anchors = {
        re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    }
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if target.startswith("http"):
            continue
        if target.startswith("#"):
            assert target[1:] in anchors, target
        else:
            assert (BASE_DIR / target.split("#")[0]).exists(), target


def test_the_readme_keeps_to_what_a_newcomer_needs_first():
    assert len(README.read_text().splitlines()) < 400
    # The section that test_package follows whole stays in the README.
    assert "## Add it to your project" in README.read_text()
