"""
Workflows: jobs that wait for other jobs, in graphs of any shape.

    from jobs.workflows import batch, chain, dag, group, step

    chain(step(fetch, url), step(parse), step(store)).enqueue()
    group(step(count, "email"), step(count, "sms")).enqueue()
    batch(
        [step(send, user_id) for user_id in ids],
        on_success=step(report),      # given the members' return values, in order
        on_failure=step(alert),       # given every member's outcome
        on_finish=step(cleanup),      # given every member's outcome
    ).enqueue()

Shapes nest: a chain's or a group's parts, and a batch's members, are steps
or other shapes. `chain(group(a, b), c)` gives `c` both results;
`group(chain(a, b), chain(c, d))` runs two chains side by side; a batch of
chains calls back once every chain has finished. `dag()` names its steps and
says what each waits for:

    dag(
        a=step(fetch, "a"),
        b=step(fetch, "b"),
        merged=step(merge).after("a", "b"),   # given [a's, b's return value]
    ).enqueue()

A step that waits for one step is given its return value first; one that
waits for several (a group, or after(x, y)), the list of their return
values, in order; `step(...).alone()` is given nothing. A batch's failure or
finish callback is given one {"id", "status", "return_value", "error"} per
member. A cycle or a name that no step has is refused before anything is
enqueued.

The whole graph is inserted in one transaction, inside the caller's
(jobs.workflow_enqueue). A job that waits is WAITING in the table, which the
claim never reads, and READY through Django's API. It becomes READY in the
transaction that writes the outcome of its last parent, fenced by that
parent's attempt (ADVANCE_WORKFLOWS, jobs.transitions.advance): each outcome
is accepted once, so each edge is counted once and each dependant is made due
once. A parent that fails for good cancels the steps that needed it to
succeed, with the reason, and those cancel theirs in turn.
"""

import heapq
from collections.abc import Sequence

from django.tasks import DEFAULT_TASK_BACKEND_ALIAS
from django.tasks.exceptions import InvalidTask

from . import workflow_enqueue
from .workflow_enqueue import WorkflowResult
from .workflow_steps import Node, Step, names, step

__all__ = ["Step", "Workflow", "WorkflowResult", "batch", "chain", "dag", "group", "step"]


class Workflow:
    """
    A graph of steps, enqueued whole by enqueue(). Its nodes are in graph
    order (every parent before its dependants); its heads wait for nothing
    in it, its tails are waited for by nothing in it: a shape that contains
    it joins what comes before to its heads, and what comes after to its tails.
    """

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.heads: list[int] = []
        self.tails: list[int] = []
        # In a dag: the names of the parts it waits for.
        self.waits_for: tuple[str, ...] = ()

    def after(self, *waits_for: str) -> "Workflow":
        """In a dag: this shape once the parts of these names have succeeded."""
        shape = Workflow()
        shape.nodes, shape.heads, shape.tails = self.nodes, self.heads, self.tails
        shape.waits_for = names(waits_for)
        return shape

    def enqueue(
        self, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS, name: str | None = None
    ) -> WorkflowResult:
        return workflow_enqueue.enqueue(self.nodes, backend=backend, name=name)

    def _place(self, part: "Part", parents: Sequence[int]) -> tuple[list[int], list[int]]:
        """
        Add a step or a shape's nodes, its heads waiting for `parents` to
        succeed (given their return values, unless alone()); return its heads
        and tails here.
        """
        if isinstance(part, Step):
            index = self._add(part, parents, "success", _given(part, parents))
            return [index], [index]
        offset = len(self.nodes)
        for node in part.nodes:
            if node.parents:
                parents = [p + offset for p in node.parents]
                self.nodes.append(Node(node.step, parents, node.run_when, node.parent_results))
            else:
                self._add(node.step, parents, "success", _given(node.step, parents))
        return [i + offset for i in part.heads], [i + offset for i in part.tails]

    def _add(
        self,
        item: Step,
        parents: Sequence[int] = (),
        run_when: str | None = None,
        parent_results: str | None = None,
    ) -> int:
        parents = list(parents)
        self.nodes.append(Node(item, parents, run_when if parents else None, parent_results))
        return len(self.nodes) - 1


Part = Step | Workflow


def chain(*parts: Part) -> Workflow:
    """Parts one after another, each once the previous one succeeded."""
    if not parts:
        raise InvalidTask("A chain has at least one step.")
    workflow = Workflow()
    tails: list[int] = []
    for position, part in enumerate(_parts(parts)):
        heads, tails = workflow._place(part, tails)
        if position == 0:
            workflow.heads = heads
    workflow.tails = tails
    return workflow


def group(*parts: Part) -> Workflow:
    """Parts that run side by side."""
    return batch(parts)


def batch(
    parts: Sequence[Part],
    *,
    on_success: Step | None = None,
    on_failure: Step | None = None,
    on_finish: Step | None = None,
) -> Workflow:
    """
    Parts that run side by side, and the callbacks that run once they have all
    finished: on_success when every one succeeded (given their return values,
    in order: a chain's is its last step's), on_failure when one failed for
    good, on_finish either way (both given every member's outcome). What comes
    after a batch in a chain or a dag waits for on_success, else on_finish,
    else the members.
    """
    members = _parts(parts)
    if not members:
        raise InvalidTask("A batch has at least one step.")
    workflow = Workflow()
    for member in members:
        heads, tails = workflow._place(member, ())
        workflow.heads += heads
        workflow.tails += tails
    ends = list(workflow.tails)
    callbacks = {}
    for callback, run_when, results in (
        (on_success, "success", "all"),
        (on_failure, "failure", "outcomes"),
        (on_finish, "finish", "outcomes"),
    ):
        if callback is not None:
            (callback,) = _steps([callback])
            callbacks[run_when] = workflow._add(callback, ends, run_when, results)
    # What comes after a batch waits for its success callback, else its
    # finish callback (never its failure one, cancelled when all succeed).
    for run_when in ("success", "finish"):
        if run_when in callbacks:
            workflow.tails = [callbacks[run_when]]
            break
    return workflow


def dag(**parts: Part) -> Workflow:
    """
    Named parts, each waiting for the parts its after() names (none: it
    starts at once). A name that no part has, or parts that wait for each
    other in a circle, are refused with an InvalidTask that names them.
    """
    if not parts:
        raise InvalidTask("A dag has at least one step.")
    _parts(list(parts.values()), named=True)
    workflow = Workflow()
    placed: dict[str, list[int]] = {}
    for name in _graph_order(parts):
        part = parts[name]
        parents = [index for parent in part.waits_for for index in placed[parent]]
        heads, placed[name] = workflow._place(part, parents)
        if not part.waits_for:
            workflow.heads += heads
    waited_for = {parent for part in parts.values() for parent in part.waits_for}
    workflow.tails = [i for name in parts if name not in waited_for for i in placed[name]]
    return workflow


def _graph_order(parts: dict[str, Part]) -> list[str]:
    """
    The names with each after those it waits for, otherwise in the order
    given (Kahn's, the earliest ready name first), or why there is none.
    """
    position = {name: index for index, name in enumerate(parts)}
    waiting: dict[str, int] = {}
    dependants: dict[str, list[str]] = {name: [] for name in parts}
    for name, part in parts.items():
        for parent in part.waits_for:
            if parent not in parts:
                raise InvalidTask(
                    f"Step {name!r} of the dag waits for {parent!r}, which no step of it is "
                    f"named (names: {', '.join(parts)})."
                )
            dependants[parent].append(name)
        waiting[name] = len(part.waits_for)
    ready = [(position[name], name) for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for dependant in dependants[name]:
            waiting[dependant] -= 1
            if waiting[dependant] == 0:
                heapq.heappush(ready, (position[dependant], dependant))
    if len(order) < len(parts):
        circle = sorted(name for name in parts if name not in set(order))
        raise InvalidTask(
            f"Steps {', '.join(circle)} of the dag can never start: they wait for each other "
            "in a circle, or for steps that do."
        )
    return order


def _given(item: Step, parents: Sequence[int]) -> str | None:
    """What a step is given of the parents it waits for: one's return value, or all of theirs."""
    if not parents or not item.takes_previous:
        return None
    return "one" if len(parents) == 1 else "all"


def _parts(parts: Sequence[Part], *, named: bool = False) -> list[Part]:
    for item in parts:
        if not isinstance(item, Step | Workflow):
            raise InvalidTask(
                "Workflows take steps, step(task, *args, **kwargs), or other shapes "
                f"(chain, group, batch, dag), not {type(item).__name__}."
            )
        if item.waits_for and not named:
            raise InvalidTask(
                f"after({', '.join(map(repr, item.waits_for))}) names steps of a dag: "
                "in a chain, a group or a batch, the shape says what waits for what."
            )
    return list(parts)


def _steps(steps: Sequence[Step]) -> list[Step]:
    for item in steps:
        if not isinstance(item, Step):
            raise InvalidTask(
                f"A batch's callback is a step, step(task, *args, **kwargs), not "
                f"{type(item).__name__}."
            )
    return list(steps)
