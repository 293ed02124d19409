"""OpenTelemetry: an attempt's span is the child of the span that enqueued its job."""

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobs.models import Job
from jobs.testing import run_due_jobs
from tests.tasks import add, fail

pytestmark = pytest.mark.django_db

# A process has one global tracer provider: set once, shared by these tests.
EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans():
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def test_an_enqueue_inside_a_span_gives_an_attempt_span_in_its_trace(spans):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("signup") as signup:
        result = add.enqueue(2, 3)
        failing = fail.enqueue("nope")
    assert Job.objects.get(id=result.id).trace_context["traceparent"].startswith("00-")
    run_due_jobs()

    attempts = {span.attributes["jobs.id"]: span for span in spans.get_finished_spans()
                if span.name.startswith("run ")}  # fmt: skip
    run = attempts[result.id]
    assert run.name == "run tests.tasks.add"
    assert run.context.trace_id == signup.get_span_context().trace_id
    assert run.parent.span_id == signup.get_span_context().span_id
    assert run.kind == trace.SpanKind.CONSUMER
    assert dict(run.attributes) == {
        "jobs.task": "tests.tasks.add",
        "jobs.queue": "default",
        "jobs.id": result.id,
        "jobs.attempt": 1,
        "jobs.outcome": "SUCCESSFUL",
    }
    assert attempts[failing.id].attributes["jobs.outcome"] == "FAILED"


def test_a_job_enqueued_outside_a_span_carries_nothing_and_its_attempt_starts_a_trace(spans):
    result = add.enqueue(1, 1)
    assert Job.objects.get(id=result.id).trace_context is None
    run_due_jobs()
    [run] = [span for span in spans.get_finished_spans() if span.name == "run tests.tasks.add"]
    assert run.parent is None


def test_a_span_that_cannot_start_leaves_the_job_to_run_untraced(spans, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter misconfigured")

    monkeypatch.setattr(trace, "get_tracer", broken)
    result = add.enqueue(4, 4)
    run_due_jobs()
    assert Job.objects.get(id=result.id).return_value == 8
    assert "no span for its attempt 1; it runs untraced" in caplog.text
