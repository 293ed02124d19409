"""
How the modules of jobs import each other: no circle, and the models at the
bottom, below the scheduler, the worker and the admin that use them.

The imports that run when a module is imported count: those at module level
(in an `if` or a `try` there too), not those inside a function, which run
when it is called. Those under `if TYPE_CHECKING:` never run, but a circle
through them is a circle of the design all the same: they are kept apart.
"""

import ast
from pathlib import Path

import jobs

PACKAGE = Path(jobs.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def module_level(
    statements: list[ast.stmt], *, type_checking: bool
) -> list[ast.Import | ast.ImportFrom]:
    """
    The import statements among these that run when their module is
    imported, and with type_checking those under `if TYPE_CHECKING:` too.
    """
    found = []
    for statement in statements:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            found.append(statement)
        elif isinstance(statement, ast.If):
            if type_checking or "TYPE_CHECKING" not in ast.unparse(statement.test):
                found += module_level(statement.body, type_checking=type_checking)
            found += module_level(statement.orelse, type_checking=type_checking)
        elif isinstance(statement, ast.Try):
            for block in (statement.body, statement.orelse, statement.finalbody):
                found += module_level(block, type_checking=type_checking)
            for handler in statement.handlers:
                found += module_level(handler.body, type_checking=type_checking)
        elif isinstance(statement, ast.With | ast.ClassDef):
            found += module_level(statement.body, type_checking=type_checking)
    return found


def imported_by(name: str, *, type_checking: bool = False) -> set[str]:
    """The modules of jobs that module `name` imports at module level."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    tree = ast.parse(path.read_text())
    for statement in module_level(tree.body, type_checking=type_checking):
        if isinstance(statement, ast.Import):
            targets |= {alias.name for alias in statement.names}
            continue
        base = statement.module or ""
        if statement.level:
            parts = package.split(".")
            parent = parts[: len(parts) - statement.level + 1]
            base = ".".join([*parent, base] if base else parent)
        for alias in statement.names:
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in MODULES else base)
    return {target for target in targets if target in MODULES and target != name}


GRAPH = {name: imported_by(name) for name in MODULES}
TYPED_GRAPH = {name: imported_by(name, type_checking=True) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, as the modules along it, or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            cycle = visit(target, [*path, name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def reached_from(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for target in GRAPH[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_graph_is_read_from_every_module():
    assert "jobs.backend" in GRAPH["jobs.workflow_enqueue"]
    assert "jobs.queries" in GRAPH["jobs.transitions"]
    # `from . import queries, transitions` names modules, not attributes.
    assert {"jobs.queries", "jobs.transitions"} <= GRAPH["jobs.backend"]


def test_no_module_of_jobs_imports_itself_through_others():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "Import circle: " + " -> ".join(cycle)


def test_nor_through_the_imports_made_for_type_checking_alone():
    cycle = find_cycle(TYPED_GRAPH)
    assert cycle is None, "Import circle, for type checking: " + " -> ".join(cycle)


def test_a_circle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({**graph, "c": set()}) is None


def test_the_models_import_nothing_of_the_scheduler_the_worker_or_the_admin():
    above = ("jobs.scheduler", "jobs.worker", "jobs.admin")
    reached = reached_from("jobs.models")
    assert sorted(name for name in reached if name.startswith(above)) == []
    assert "jobs.schedules" in reached
