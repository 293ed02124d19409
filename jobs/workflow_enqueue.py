"""
A workflow's graph into the jobs table: every job and every edge in one
transaction (jobs.workflows builds the graph). On a backend that is not a
PostgresBackend, such as the test backends, each job is enqueued there in
graph order instead, as a worker would make it due.
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
from .backend import PostgresBackend, pipeline, ready_result
from .calls import dumps
from .jsonb import unstorable
from .models import Job
from .uniqueness import held_over_time
from .workflow_steps import Node


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


def enqueue(
    nodes: Sequence[Node], *, backend: str = DEFAULT_TASK_BACKEND_ALIAS, name: str | None = None
) -> WorkflowResult:
    """
    Insert every job of the workflow and the edges between them in one
    transaction on the backend's database, inside the caller's own if it has
    one. Each step is checked and keeps its options as an enqueue of it
    would (PostgresBackend.enqueue_params); one with run_after waits for its
    parents and for its time. `name` is what the admin and the dashboard
    call the workflow ("welcome messages of user 7"), beside its id.
    """
    _check_waiting_steps(nodes)
    _check_name(name)
    jobs_backend = task_backends[backend]
    if not isinstance(jobs_backend, PostgresBackend):
        return replace(_enqueue_elsewhere(nodes, backend), name=name)
    workflow_id = str(uuid_utils.uuid7())
    # Made here, not with the shape: a shape enqueued twice makes two workflows.
    ids = [str(uuid_utils.uuid7()) for _ in nodes]
    graph = _Graph.of(nodes, jobs_backend)
    # The caller's transaction if it has one (no savepoint: the graph is all or
    # nothing with it), else one of its own.
    with (
        transaction.atomic(using=jobs_backend.database, savepoint=False),
        connections[jobs_backend.database].cursor() as cursor,
    ):
        if graph.key_rows:
            transitions.hold_limit_keys(cursor, list(graph.key_rows.values()))
        # Pipelined, as enqueue_many() is: the statements go to the server at
        # once, and the results are made while Postgres inserts the rows.
        with cursor.db.wrap_database_errors, pipeline(cursor.cursor.connection):
            cursor.execute(
                queries.workflows.ENQUEUE_WORKFLOW,
                {
                    "backend": backend,
                    "workflow_id": workflow_id,
                    "workflow_name": name,
                    "poll_interval": jobs_backend.queue_options.poll_interval,
                    **graph.columns(nodes, ids),
                },
            )
            results = graph.results(ids, backend)
            enqueued_at, _ = cursor.fetchone()
    announce = task_enqueued.has_listeners(type(jobs_backend))
    for result in results:
        object.__setattr__(result, "enqueued_at", enqueued_at)
        if announce:
            task_enqueued.send(type(jobs_backend), task_result=result)
    return WorkflowResult(workflow_id, results, name)


@dataclass
class _Graph:
    """
    A workflow's jobs as ENQUEUE_WORKFLOW inserts them. The steps of one task
    (the same Task object, the same options) are checked and encoded
    together, as enqueue_many() checks its calls: the jobs go in by task,
    each with its place in the graph.
    """

    # What the steps of each task share, and their calls' JSON, task by task.
    tasks: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    # The nodes' graph indexes in the order their calls go in, and the
    # position (from 1) of each one's task.
    order: list[int] = field(default_factory=list)
    task_of: list[int] = field(default_factory=list)
    key_rows: dict[str, list[Any]] = field(default_factory=dict)
    # Each node's task (on the backend) and call, by graph index.
    made: dict[int, tuple[Task, list[Any], dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def of(cls, nodes: Sequence[Node], jobs_backend: PostgresBackend) -> "_Graph":
        graph = cls()
        for indexes in _by_task(nodes).values():
            task = _on_backend(nodes[indexes[0]].step.task, jobs_backend.alias)
            calls = [(list(nodes[i].step.args), dict(nodes[i].step.kwargs)) for i in indexes]
            params = jobs_backend.enqueue_params(task, calls)
            graph.key_rows.update((row[0], row) for row in params.get("limit_keys", ()))
            graph.tasks.append(_task_columns(params))
            graph.calls.append(params["calls"][1:-1])
            graph.order += indexes
            graph.task_of += [len(graph.tasks)] * len(indexes)
            for index, (args, kwargs) in zip(indexes, calls, strict=True):
                graph.made[index] = (task, args, kwargs)
        return graph

    def columns(self, nodes: Sequence[Node], ids: list[str]) -> dict[str, str]:
        """ENQUEUE_WORKFLOW's parameters of the nodes and edges: text, one value a node or edge."""
        ordered = [nodes[index] for index in self.order]
        position = {index: place for place, index in enumerate(self.order, start=1)}
        waited_for = {parent for node in ordered for parent in node.parents}
        edges = [
            (position[parent], position[index], place)
            for index in self.order
            for place, parent in enumerate(nodes[index].parents)
        ]
        return {
            "tasks": dumps(self.tasks),
            "calls": f"[{','.join(self.calls)}]",
            "ids": ",".join(ids[index] for index in self.order),
            "tasks_of": ",".join(map(str, self.task_of)),
            "parents_left": ",".join(str(len(node.parents)) for node in ordered),
            "run_when": ",".join(node.run_when or "" for node in ordered),
            "parent_results": ",".join(node.parent_results or "" for node in ordered),
            "has_dependants": ",".join("t" if i in waited_for else "f" for i in self.order),
            "edge_parents": ",".join(str(edge[0]) for edge in edges),
            "edge_children": ",".join(str(edge[1]) for edge in edges),
            "edge_positions": ",".join(str(edge[2]) for edge in edges),
        }

    def results(self, ids: list[str], backend: str) -> list[TaskResult]:
        """Each job's TaskResult, in graph order."""
        results = []
        for index, job_id in enumerate(ids):
            task, args, kwargs = self.made[index]
            results.append(ready_result(task, job_id, args, kwargs, backend))
        return results


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


def _check_waiting_steps(nodes: Sequence[Node]) -> None:
    """
    Refuse a unique key on a step that waits for others. It becomes due in
    the transaction of its last parent's outcome, where a live job with its
    key could neither be handed back, as enqueue() hands it back, nor be
    joined by a second one. Refuse too a key held over time or replaced, on
    any step: the steps go in with one INSERT, which keeps only the live
    job's uniqueness (jobs.uniqueness).
    """
    for node in nodes:
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


def _by_task(nodes: Sequence[Node]) -> dict[int, list[int]]:
    """The nodes' indexes by the Task object of their step, in graph order."""
    groups: dict[int, list[int]] = {}
    for index, node in enumerate(nodes):
        groups.setdefault(id(node.step.task), []).append(index)
    return groups


def _task_columns(params: dict[str, Any]) -> dict[str, Any]:
    """
    The columns that the steps of one task share, for
    queries.workflows.ENQUEUE_WORKFLOW: those an enqueue of it would write.
    """
    run_after, timeout = params["run_after"], params["timeout"]
    return {
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
    }


def _enqueue_elsewhere(nodes: Sequence[Node], backend: str) -> WorkflowResult:
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
    for node in nodes:
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
