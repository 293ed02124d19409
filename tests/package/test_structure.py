"""
The package stays readable part by part: no module past 500 lines, no
function past 60 (its docstring aside), no class past 25 methods.
"""

import ast
from pathlib import Path

import jobs

PACKAGE = Path(jobs.__file__).parent
MODULE_LINES, FUNCTION_LINES, CLASS_METHODS = 500, 60, 25


def modules() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.relative_to(PACKAGE).parts
    )


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_no_module_is_past_500_lines():
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in modules()
        if (lines := len(path.read_text().splitlines())) > MODULE_LINES
    }
    assert long == {}


def test_no_function_is_past_60_lines_nor_class_past_25_methods():
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            name = f"{path.relative_to(PACKAGE)}:{getattr(node, 'name', '')}"
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if body_lines(node) > FUNCTION_LINES:
                    found.append(f"{name}: {body_lines(node)} lines")
            elif isinstance(node, ast.ClassDef):
                methods = [
                    item
                    for item in node.body
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                ]
                if len(methods) > CLASS_METHODS:
                    found.append(f"{name}: {len(methods)} methods")
    assert found == []
