"""
The steps of a workflow and the nodes of its graph: what jobs.workflows
builds shapes of and jobs.workflow_enqueue inserts.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.tasks.base import Task
from django.tasks.exceptions import InvalidTask


@dataclass(frozen=True)
class Step:
    """One call of a task in a workflow."""

    task: Task
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Whether it is given what it waits for returned (a chain's previous step,
    # a group's members, the steps it comes after in a dag).
    takes_previous: bool = True
    # In a dag: the names of the parts it waits for.
    waits_for: tuple[str, ...] = ()

    # Made directly rather than by dataclasses.replace(), several times
    # faster: a graph of 10,000 steps makes as many.
    def alone(self) -> "Step":
        """This step without the return values of what it waits for."""
        return Step(self.task, self.args, self.kwargs, False, self.waits_for)

    def after(self, *waits_for: str) -> "Step":
        """In a dag: this step once the parts of these names have succeeded."""
        return Step(self.task, self.args, self.kwargs, self.takes_previous, names(waits_for))


def step(task: Task, *args: Any, **kwargs: Any) -> Step:
    """A call of task, to put in a chain, a group, a batch or a dag."""
    if not isinstance(task, Task):
        raise InvalidTask(f"A step is a call of a task (@task), not {type(task).__name__}.")
    return Step(task, args, kwargs)


@dataclass
class Node:
    """One job of the graph, before it is inserted."""

    step: Step
    parents: list[int] = field(default_factory=list)
    # When it runs: "success" (every parent succeeded), "failure" (all
    # finished, one failed), "finish" (all finished); None without parents.
    run_when: str | None = None
    # What it is given of its parents first (RESOLVE_PARENT_RESULTS): "one",
    # "all", "outcomes", or None.
    parent_results: str | None = None


def names(waits_for: Sequence[str]) -> tuple[str, ...]:
    """The names an after() gives, or an InvalidTask saying why they cannot be."""
    if not waits_for or not all(isinstance(name, str) and name for name in waits_for):
        raise InvalidTask(f"after() takes the names of steps of the dag, not {waits_for!r}.")
    if len(set(waits_for)) < len(waits_for):
        raise InvalidTask(f"after() names each step once, not {waits_for!r}.")
    return tuple(waits_for)
