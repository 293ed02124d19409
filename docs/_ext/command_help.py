"""
The `command-help` directive: a management command's `--help`, from its parser.

    ```{command-help} runworker
    ```

A command with subcommands (`jobs`) gets its own help, then each
subcommand's, so the reference lists every option the code accepts.
"""

import argparse

from django.core.management import get_commands, load_command_class
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

WIDTH = 88


class CommandHelp(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        app = get_commands().get(name)
        if app is None:
            raise self.error(f"no management command named {name!r}")
        parser = load_command_class(app, name).create_parser("manage.py", name)
        result: list[nodes.Node] = [_literal(_help(parser))]
        for path, subparser in _subparsers(parser, f"manage.py {name}"):
            title = nodes.rubric(text=path)
            result += [title, _literal(_help(subparser))]
        return result


def _help(parser: argparse.ArgumentParser) -> str:
    formatter = parser.formatter_class
    parser.formatter_class = lambda prog: formatter(prog, width=WIDTH)
    try:
        return parser.format_help()
    finally:
        parser.formatter_class = formatter


def _subparsers(
    parser: argparse.ArgumentParser, path: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, subparser in action.choices.items():
                sub_path = f"{path} {sub_name}"
                found.append((sub_path, subparser))
                found += _subparsers(subparser, sub_path)
    return found


def _literal(text: str) -> nodes.literal_block:
    block = nodes.literal_block(text, text)
    block["language"] = "text"
    return block


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("command-help", CommandHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
