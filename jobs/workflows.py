"""
Workflows: jobs that wait for other jobs.

    from jobs.workflows import batch, chain, group, step

    chain(step(fetch, url), step(parse), step(store)).enqueue()
    group(step(count, "email"), step(count, "sms")).enqueue()
    batch(
        [step(send, user_id) for user_id in ids],
        on_success=step(report),      # given the members' return values, in order
        on_failure=step(alert),       # given every member's outcome
        on_finish=step(cleanup),      # given every member's outcome
    ).enqueue()

A chain's step is given the previous step's return value as its first
argument (`step(...).alone()` opts out); a batch's success callback, the list
of its members' return values, in order; a failure or finish callback, one
{"id", "status", "return_value", "error"} per member.

The whole graph is inserted in one transaction, inside the caller's (a
rolled-back request enqueues none of it). A job that waits is WAITING in the
table, which the claim never reads, and READY through Django's API. It becomes
READY in the transaction that writes the outcome of its last parent, fenced
by that parent's attempt (ADVANCE_WORKFLOWS, jobs.transitions.advance): each
outcome is accepted once, so each edge is counted once and each callback is made due once. A
parent that fails for good cancels the steps that needed it to succeed, with
the reason, and those cancel theirs in turn.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import uuid_utils
from django.db import connections, transaction
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, TaskResult, task_backends
from django.tasks.base import Task
from django.tasks.exceptions import InvalidTask
from django.tasks.signals import task_enqueued

from . import queries, transitions
from .backend import PostgresBackend, ready_result
from .calls import dumps
from .jsonb import unstorable
from .models import Job
from .uniqueness import held_over_time


@dataclass(frozen=True)
class Step:
    """One call of a task in a workflow."""

    task: Task
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    # In a chain: whether it is given the previous step's return value first.
    takes_previous: bool = True

    def alone(self) -> "Step":
        """This step without the previous step's return value."""
        return replace(self, takes_previous=False)


def step(task: Task, *args: Any, **kwargs: Any) -> Step:
    """A call of task, to put in a chain, a group or a batch."""
    if not isinstance(task, Task):
        raise InvalidTask(f"A step is a call of a task (@task), not {type(task).__name__}.")
    return Step(task, args, kwargs)


@dataclass
class _Node:
    """One job of the graph, before it is inserted."""

    step: Step
    id: str
    parents: list[int] = field(default_factory=list)
    # When it runs: "success" (every parent succeeded), "failure" (all
    # finished, one failed), "finish" (all finished); None without parents.
    run_when: str | None = None
    # What it is given of its parents first (RESOLVE_PARENT_RESULTS): "one",
    # "all", "outcomes", or None.
    parent_results: str | None = None


@dataclass(frozen=True)
class WorkflowResult:
    """
    What enqueue() made: the workflow's id and each job's TaskResult, in
    graph order (None for a job another backend did not enqueue: see
    _enqueue_elsewhere).
    """

    id: str
    results: list[TaskResult | None]
    name: str | None = None


class Workflow:
    """A graph of steps, enqueued whole by enqueue()."""

    def __init__(self) -> None:
        self.nodes: list[_Node] = []

    def _add(self, item: Step, **options: Any) -> int:
        self.nodes.append(_Node(item, str(uuid_utils.uuid7()), **options))
        return len(self.nodes) - 1

    def enqueue(
        self, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS, name: str | None = None
    ) -> WorkflowResult:
        return enqueue(self, backend=backend, name=name)


def chain(*steps: Step) -> Workflow:
    """Steps one after another; each given the previous one's return value, unless alone()."""
    if not steps:
        raise InvalidTask("A chain has at least one step.")
    workflow = Workflow()
    previous = None
    for item in _steps(steps):
        if previous is None:
            previous = workflow._add(item)
            continue
        previous = workflow._add(
            item,
            parents=[previous],
            run_when="success",
            parent_results="one" if item.takes_previous else None,
        )
    return workflow


def group(*steps: Step) -> Workflow:
    """Steps that run side by side."""
    return batch(steps)


def batch(
    steps: Sequence[Step],
    *,
    on_success: Step | None = None,
    on_failure: Step | None = None,
    on_finish: Step | None = None,
) -> Workflow:
    """
    Steps that run side by side, and the callbacks that run once they have all
    finished: on_success when every one succeeded (given their return values,
    in order), on_failure when one failed for good, on_finish either way (both
    given every member's outcome).
    """
    members = _steps(steps)
    if not members:
        raise InvalidTask("A batch has at least one step.")
    workflow = Workflow()
    indexes = [workflow._add(item) for item in members]
    for callback, run_when, results in (
        (on_success, "success", "all"),
        (on_failure, "failure", "outcomes"),
        (on_finish, "finish", "outcomes"),
    ):
        if callback is not None:
            (callback,) = _steps([callback])
            workflow._add(
                callback, parents=list(indexes), run_when=run_when, parent_results=results
            )
    return workflow


def _steps(steps: Sequence[Step]) -> list[Step]:
    for item in steps:
        if not isinstance(item, Step):
            raise InvalidTask(
                f"Workflows take steps, step(task, *args, **kwargs), not {type(item).__name__}."
            )
    return list(steps)


def enqueue(
    workflow: Workflow, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS, name: str | None = None
) -> WorkflowResult:
    """
    Insert every job of the workflow and the edges between them in one
    transaction on the backend's database, inside the caller's own if it has
    one. Each step is checked and keeps its options as an enqueue of it
    would (PostgresBackend.enqueue_params); one with run_after waits for its
    parents and for its time. `name` is what the admin and the dashboard
    call the workflow ("welcome messages of user 7"), beside its id.
    """
    _check_waiting_steps(workflow)
    _check_name(name)
    jobs_backend = task_backends[backend]
    if not isinstance(jobs_backend, PostgresBackend):
        return replace(_enqueue_elsewhere(workflow, backend), name=name)
    workflow_id = str(uuid_utils.uuid7())
    children = {index for node in workflow.nodes for index in node.parents}
    rows, calls, edges, results, key_rows = [], [], [], [], {}
    for index, node in enumerate(workflow.nodes):
        task = _on_backend(node.step.task, backend)
        args, kwargs = list(node.step.args), dict(node.step.kwargs)
        params = jobs_backend.enqueue_params(task, [(args, kwargs)])
        key_rows.update((row[0], row) for row in params.get("limit_keys", ()))
        rows.append(_row(node, params, has_dependants=index in children))
        # The one call of "[[args, kwargs]]" (and its limit keys third).
        calls.append(params["calls"][1:-1])
        edges += [
            [workflow.nodes[parent].id, node.id, position]
            for position, parent in enumerate(node.parents)
        ]
        results.append(ready_result(task, node.id, args, kwargs, backend))
    # The caller's transaction if it has one (no savepoint: the graph is all or
    # nothing with it), else one of its own.
    with transaction.atomic(using=jobs_backend.database, savepoint=False):
        with connections[jobs_backend.database].cursor() as cursor:
            if key_rows:
                transitions.hold_limit_keys(cursor, list(key_rows.values()))
            cursor.execute(
                queries.workflows.ENQUEUE_WORKFLOW,
                {
                    "backend": backend,
                    "workflow_id": workflow_id,
                    "workflow_name": name,
                    "jobs": dumps(rows),
                    "calls": f"[{','.join(calls)}]",
                    "poll_interval": jobs_backend.queue_options.poll_interval,
                },
            )
            enqueued_at, _ = cursor.fetchone()
            if edges:
                cursor.execute(queries.workflows.ENQUEUE_DEPENDENCIES, {"edges": dumps(edges)})
    for result in results:
        object.__setattr__(result, "enqueued_at", enqueued_at)
        task_enqueued.send(type(jobs_backend), task_result=result)
    return WorkflowResult(workflow_id, results, name)


def _check_name(name: object) -> None:
    max_length = Job._meta.get_field("workflow_name").max_length
    if name is not None and (
        not isinstance(name, str) or not name.strip() or len(name) > max_length
    ):
        raise InvalidTask(
            f"A workflow's name is a string of 1 to {max_length} characters, not {name!r}."
        )
    if name is not None and (reason := unstorable(dumps(name))):
        raise InvalidTask(f"A workflow's name holds {reason}, which Postgres cannot store.")


def _check_waiting_steps(workflow: Workflow) -> None:
    """
    Refuse a unique key on a step that waits for others. It becomes due in
    the transaction of its last parent's outcome, where a live job with its
    key could neither be handed back, as enqueue() hands it back, nor be
    joined by a second one. Refuse too a key held over time or replaced, on
    any step: the steps go in with one INSERT, which keeps only the live
    job's uniqueness (jobs.uniqueness).
    """
    for node in workflow.nodes:
        task = node.step.task
        if node.parents and getattr(task, "unique_key", None) is not None:
            raise InvalidTask(
                f"A step that waits for others cannot have a unique key "
                f"({task.module_path}, {task.unique_key!r}): give it to a first step."
            )
        if held_over_time(task) or getattr(task, "replace", False):
            raise InvalidTask(
                f"A workflow's step keeps a unique key as its live job only ({task.module_path}): "
                "unique_for, unique_states and replace are for enqueue()."
            )


def _on_backend(task: Task, backend: str) -> Task:
    return task if task.backend == backend else task.using(backend=backend)


def _row(node: _Node, params: dict[str, Any], *, has_dependants: bool) -> dict[str, Any]:
    """
    The columns of a step's job for queries.workflows.ENQUEUE_WORKFLOW: those an enqueue
    of it would write (its params), and its place in the graph.
    """
    run_after, timeout = params["run_after"], params["timeout"]
    return {
        "id": node.id,
        "task_path": params["task_path"],
        "queue": params["queue"],
        "priority": params["priority"],
        "run_after": None if run_after is None else run_after.isoformat(),
        "max_attempts": params["max_attempts"],
        "timeout": None if timeout is None else timeout.total_seconds(),
        "unique_key": params["unique_key"],
        "tags": params.get("tags", []),
        # JSON text already, as the enqueue statements take them.
        "meta": params.get("meta"),
        "trace_context": params.get("trace_context"),
        "retention": params.get("retention"),
        "status": "WAITING" if node.parents else "READY",
        "parents_left": len(node.parents),
        "run_when": node.run_when,
        "parent_results": node.parent_results,
        "has_dependants": has_dependants,
    }


def _enqueue_elsewhere(workflow: Workflow, backend: str) -> WorkflowResult:
    """
    The graph on a backend that is not a PostgresBackend, such as the test
    backends of jobs.testing or Django's own: each job is enqueued there in
    graph order, with its step's options, a dependant only once its parents
    have finished (as they have at once on an immediate backend) and its
    condition holds, given their results as a worker would give them. A
    dependant whose parents have not finished (a dummy backend) is not
    enqueued: its result is None.
    """
    results: list[TaskResult | None] = []
    for node in workflow.nodes:
        args = list(node.step.args)
        parents = [results[index] for index in node.parents]
        if parents:
            if any(parent is None or not parent.is_finished for parent in parents):
                results.append(None)
                continue
            succeeded = all(parent.status == "SUCCESSFUL" for parent in parents)
            wanted = {"success": succeeded, "failure": not succeeded, "finish": True}
            if not wanted[node.run_when]:
                results.append(None)
                continue
            args = _given(node.parent_results, parents) + args
        task = _on_backend(node.step.task, backend)
        results.append(task.enqueue(*args, **node.step.kwargs))
    return WorkflowResult(str(uuid_utils.uuid7()), results)


def _given(kind: str | None, parents: list[TaskResult]) -> list[Any]:
    """What a dependant is given first of its finished parents (RESOLVE_PARENT_RESULTS)."""
    if kind is None:
        return []

    def value(parent: TaskResult) -> Any:
        return parent.return_value if parent.status == "SUCCESSFUL" else None

    if kind == "one":
        return [value(parents[0])]
    if kind == "all":
        return [[value(parent) for parent in parents]]
    return [
        [
            {
                "id": parent.id,
                "status": parent.status.value,
                "return_value": value(parent),
                "error": _last_line(parent.errors[-1].traceback) if parent.errors else None,
            }
            for parent in parents
        ]
    ]


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
