"""
Every statement of the queue as it runs, in one text: those built from parts
(the variants of a family, the claim under limits) are read here whole, and
a dict of variants (PRUNABLE["rule"]) as one statement per key.
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
            if not name.isupper():
                continue
            public_dict = isinstance(value, dict) and not name.startswith("_")
            variants = value.items() if public_dict else [("", value)]
            for key, statement in variants:
                if isinstance(statement, str):
                    label = f"{name}[{key!r}]" if key else name
                    parts.append(f"\n-- jobs.queries.{family}.{label}\n{statement.strip()};\n")
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
