"""
Workflows of any shape (jobs.workflows): chains, groups and batches nested in
each other, and dags whose steps name what they wait for; each node keeps
the exactly-once rules of a plain chain, with real workers killed mid-run.
"""

import importlib
import signal

import pytest
from django.tasks.exceptions import InvalidTask

from jobs.models import Job, JobStatus
from jobs.testing import run_due_jobs
from jobs.workflows import Step, batch, chain, dag, group, step
from tests.conftest import fetch, wait_until
from tests.docs.pages import python_blocks, section
from tests.tasks import add, batch_callback, fail, graph_node

pytestmark = pytest.mark.django_db


def node(label: str, seconds: float = 0.0) -> Step:
    return step(graph_node, label=label, seconds=seconds)


def values(enqueued) -> list:
    """Each job's return value, in graph order (None for one that did not succeed)."""
    jobs = {str(job.id): job for job in Job.objects.filter(id__in=[r.id for r in enqueued.results])}
    return [
        jobs[r.id].return_value if jobs[r.id].status == JobStatus.SUCCESSFUL else None
        for r in enqueued.results
    ]


def statuses(enqueued) -> list[str]:
    jobs = {
        str(j.id): j.status for j in Job.objects.filter(id__in=[r.id for r in enqueued.results])
    }
    return [jobs[r.id] for r in enqueued.results]


# Nested shapes, run in this process.


def test_a_step_after_a_group_is_given_both_results(ledger):
    enqueued = chain(group(node("a"), node("b")), node("c")).enqueue()
    assert statuses(enqueued) == ["READY", "READY", "WAITING"]
    run_due_jobs()
    assert values(enqueued) == ["a", "b", "(a+b)>c"]


def test_a_group_of_chains_runs_each_chain_in_order(ledger):
    enqueued = group(chain(node("a"), node("b")), chain(node("c"), node("d"))).enqueue()
    assert statuses(enqueued) == ["READY", "WAITING", "READY", "WAITING"]
    run_due_jobs()
    assert values(enqueued) == ["a", "a>b", "c", "c>d"]


def test_a_group_in_a_chain_gives_each_member_the_previous_value(ledger):
    enqueued = chain(node("a"), group(node("b"), node("c")), node("d")).enqueue()
    run_due_jobs()
    assert values(enqueued) == ["a", "a>b", "a>c", "(a>b+a>c)>d"]


def test_a_batch_of_chains_calls_back_with_each_chains_last_value(ledger):
    enqueued = batch(
        [chain(node("a"), node("b")), chain(node("c"), node("d"))],
        on_success=step(batch_callback, label="success"),
    ).enqueue()
    run_due_jobs()
    callback = Job.objects.get(id=enqueued.results[-1].id)
    assert callback.status == JobStatus.SUCCESSFUL
    assert callback.args == [["a>b", "c>d"]]


def test_what_follows_a_batch_waits_for_its_success_callback(ledger):
    enqueued = chain(
        batch(
            [node("a"), node("b")],
            on_success=node("s"),
            on_failure=step(batch_callback, label="failure"),
        ),
        node("after"),
    ).enqueue()
    run_due_jobs()
    assert values(enqueued)[2] == "(a+b)>s"
    assert values(enqueued)[4] == "(a+b)>s>after"
    assert statuses(enqueued)[3] == JobStatus.CANCELLED


def test_a_failure_in_a_nested_chain_cancels_what_needed_it_and_calls_back_on_failure(ledger):
    enqueued = batch(
        [chain(node("a"), step(fail).alone(), node("b")), chain(node("c"), node("d"))],
        on_success=step(batch_callback, label="success"),
        on_failure=step(batch_callback, label="failure"),
    ).enqueue()
    run_due_jobs()
    assert statuses(enqueued) == [
        "SUCCESSFUL",
        "FAILED",
        "CANCELLED",
        "SUCCESSFUL",
        "SUCCESSFUL",
        "CANCELLED",
        "SUCCESSFUL",
    ]
    failure = Job.objects.get(id=enqueued.results[-1].id)
    # Given each member's outcome: the chains' last steps.
    [outcomes] = failure.args
    assert [o["status"] for o in outcomes] == ["CANCELLED", "SUCCESSFUL"]


# Dags.


def test_a_dag_runs_each_step_after_the_steps_it_names(ledger):
    enqueued = dag(
        a=node("a"),
        b=node("b"),
        c=node("c").after("a", "b"),
        d=node("d").after("c"),
        e=node("e").after("a"),
        alone=step(add, 1, 2).after("e").alone(),
    ).enqueue()
    run_due_jobs()
    assert values(enqueued)[:5] == ["a", "b", "(a+b)>c", "(a+b)>c>d", "a>e"]
    assert add.get_result(enqueued.results[5].id).return_value == 3


def test_a_dag_holds_shapes_and_is_held_by_them(ledger):
    enqueued = chain(
        node("start"),
        dag(
            prepared=chain(node("p1"), node("p2")),
            fanned=group(node("f1"), node("f2")).after("prepared"),
            last=node("z").after("fanned"),
        ),
    ).enqueue()
    run_due_jobs()
    assert values(enqueued) == [
        "start",
        "start>p1",
        "start>p1>p2",
        "start>p1>p2>f1",
        "start>p1>p2>f2",
        "(start>p1>p2>f1+start>p1>p2>f2)>z",
    ]


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            lambda: dag(a=node("a").after("c"), b=node("b")),
            r"Step 'a' of the dag waits for 'c', which no step of it is named \(names: a, b\)",
        ),
        (
            lambda: dag(a=node("a").after("b"), b=node("b").after("a"), c=node("c")),
            "Steps a, b of the dag can never start: they wait for each other in a circle",
        ),
        (lambda: dag(a=node("a").after("a")), "Steps a of the dag can never start"),
        (lambda: dag(a=node("a"), b=node("b").after("a", "a")), "names each step once"),
        (lambda: chain(node("a"), node("b").after("a")), r"after\('a'\) names steps of a dag"),
        (lambda: node("a").after(), "after\\(\\) takes the names of steps"),
        (lambda: dag(), "A dag has at least one step"),
        (
            lambda: group(node("a"), add),
            r"or other shapes \(chain, group, batch, dag\), not JobTask",
        ),
        (lambda: batch([node("a")], on_success=chain(node("b"))), "A batch's callback is a step"),
    ],
)
def test_a_shape_that_cannot_run_is_refused_before_anything_is_enqueued(shape, message):
    with pytest.raises(InvalidTask, match=message):
        shape().enqueue()
    assert not Job.objects.exists()


def test_a_shape_enqueued_twice_makes_two_workflows():
    shape = chain(node("a"), node("b"))
    first, second = shape.enqueue(), shape.enqueue()
    assert first.id != second.id
    assert Job.objects.count() == 4


# The docs' example.


def test_the_docs_shapes_example_runs_each_shape_as_it_says(tmp_path, monkeypatch):
    [block] = python_blocks(section("Shapes inside shapes, and dags"))
    (tmp_path / "docs_shapes.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("docs_shapes")
    assert run_due_jobs().counts == {"SUCCESSFUL": 13}
    published = sorted(
        job.return_value for job in Job.objects.filter(task_path="docs_shapes.publish")
    )
    assert published == [
        "published rows of crm",
        "published rows of crm + rows of shop",
        "published rows of crm + rows of shop",
        "published rows of shop",
    ]
    merged = Job.objects.filter(task_path="docs_shapes.merge").values_list("args", flat=True)
    assert sorted(map(str, merged)) == sorted(
        map(
            str,
            [
                [["rows of crm", "rows of shop"]],
                [["published rows of crm", "published rows of shop"]],
                [["rows of crm", "rows of shop"]],
            ],
        )
    )
    assert Job.objects.filter(workflow_name="nightly export").count() == 4


# Real workers.


@pytest.mark.django_db(transaction=True)
def test_nested_shapes_with_a_worker_killed_mid_run_run_each_node_once(
    start_worker, worker_env, ledger, started
):
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.worker_settings"}
    nested = chain(group(node("a"), node("b", seconds=3)), node("c")).enqueue()
    fanned = group(chain(node("d"), node("e", seconds=3)), chain(node("f"), node("g"))).enqueue()
    graph = dag(
        x=node("x"),
        y=batch([chain(node("y1"), node("y2"))], on_success=node("y3")).after("x"),
        z=node("z").after("x", "y"),
    ).enqueue()
    slow = [nested.results[1].id, fanned.results[1].id]
    worker = start_worker("--concurrency", "2", env=env)
    wait_until(started(*slow))

    def written():
        """every step that ran before the slow ones has its outcome written"""
        ran = {job_id for (job_id,) in fetch("SELECT job_id::text FROM test_ledger")}
        done = Job.objects.filter(id__in=ran, status=JobStatus.SUCCESSFUL).count()
        return done == len(ran)

    # A step that ran while the coordinator held its outcome for the next
    # write would run again after the kill (at least once, as documented):
    # the kill comes once only the slow steps are left running.
    wait_until(written)
    worker.signal(signal.SIGKILL)
    worker.wait()
    # The slow steps' work is cut short before their side effects; another
    # worker rescues them, runs them again and goes on.
    start_worker("--concurrency", "2", env=env)
    every = [*nested.results, *fanned.results, *graph.results]
    done = Job.objects.filter(id__in=[r.id for r in every], status=JobStatus.SUCCESSFUL)
    wait_until(lambda: done.count() == len(every), timeout=90)
    runs = dict(fetch("SELECT job_id::text, runs FROM test_ledger"))
    assert runs == {r.id: 1 for r in every}
    assert values(nested) == ["a", "b", "(a+b)>c"]
    assert values(fanned) == ["d", "d>e", "f", "f>g"]
    assert values(graph) == ["x", "x>y1", "x>y1>y2", "(x>y1>y2)>y3", "(x+(x>y1>y2)>y3)>z"]
    assert Job.objects.get(id=slow[0]).attempts == Job.objects.get(id=slow[1]).attempts == 2
