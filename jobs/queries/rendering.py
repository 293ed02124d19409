"""
Every statement of the queue as it runs, in one text: those built from parts
(the variants of a family, the claim under limits) are read here whole.
docs/statements.sql holds it, and tests/queries/test_rendered.py keeps that
file equal to what runs:

    python -m jobs.queries.rendering docs/statements.sql
"""

import ast
import sys
from pathlib import Path

from . import __all__ as FAMILIES
from . import channels


def render() -> str:
    """Each family's statements in the order they are written, headed by their names."""
    parts = ["-- The queue's statements as they run, rendered by jobs.queries.rendering.\n"]
    for family in FAMILIES:
        module = sys.modules[f"{__package__}.{family}"]
        if module is channels:
            continue
        for name in _defined(module):
            value = getattr(module, name)
            if name.isupper() and isinstance(value, str):
                parts.append(f"\n-- jobs.queries.{family}.{name}\n{value.strip()};\n")
    return "".join(parts)


def _defined(module: object) -> list[str]:
    """The names a module assigns itself, in order (not those it imports)."""
    tree = ast.parse(Path(module.__file__).read_text())
    return [
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for element in node.targets
        for target in (element.elts if isinstance(element, ast.Tuple) else [element])
        if isinstance(target, ast.Name)
    ]


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(render())
