"""
OpenTelemetry, when it is installed and configured: the trace context of the
code that enqueues travels on the job (jobs_job.trace_context, W3C
traceparent), and each attempt runs in a span that is its child, with the
queue, task, attempt and outcome as attributes.

Without opentelemetry-api, or without an SDK's tracer provider, nothing is
stored and no span is made: the queue costs what it did.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - the package is optional
    propagate = trace = None


def current_context() -> dict[str, str] | None:
    """The enqueuing code's trace context as a carrier, or None outside a span."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def enabled() -> bool:
    """Whether spans go anywhere: an SDK set a tracer provider."""
    return trace is not None and not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    )


@contextmanager
def attempt_span(
    task_path: str, queue: str, job_id: str, attempt: int, carrier: dict[str, str] | None
) -> Iterator[Any]:
    """The span of one attempt, the child of the enqueuer's span when it had one."""
    parent = propagate.extract(carrier) if carrier else None
    tracer = trace.get_tracer("jobs")
    with tracer.start_as_current_span(
        f"run {task_path}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "jobs.task": task_path,
            "jobs.queue": queue,
            "jobs.id": job_id,
            "jobs.attempt": attempt,
        },
    ) as span:
        yield span
