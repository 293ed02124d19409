"""
OpenTelemetry, when it is installed and configured: the trace context of the
code that enqueues travels on the job (jobs_job.trace_context, W3C
traceparent), and each attempt runs in a span that is its child, with the
queue, task, attempt and outcome as attributes.

Without opentelemetry-api, or without an SDK's tracer provider, nothing is
stored and no span is made: the queue costs what it did.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - the package is optional
    propagate = trace = None

logger = logging.getLogger("jobs.worker")


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
    task_path: str, queue: str, job_id: str, attempt: int, carrier: object
) -> Iterator[Any]:
    """
    The span of one attempt, the child of the enqueuer's span when it had one;
    None when tracing fails to start one: the job runs all the same, since an
    exception here would end the executor and lose the attempt.
    """
    try:
        parent = propagate.extract(carrier) if isinstance(carrier, dict) else None
        span_context = trace.get_tracer("jobs").start_as_current_span(
            f"run {task_path}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "jobs.task": task_path,
                "jobs.queue": queue,
                "jobs.id": job_id,
                "jobs.attempt": attempt,
            },
        )
        span = span_context.__enter__()
    except Exception:
        logger.exception("Job %s: no span for its attempt %d; it runs untraced", job_id, attempt)
        yield None
        return
    try:
        yield span
    finally:
        try:
            span_context.__exit__(None, None, None)
        except Exception:
            logger.exception("Job %s: its attempt's span did not end cleanly", job_id)


def record_outcome(span: Any, status: str) -> None:
    """The attempt's outcome on its span (none when the span could not start)."""
    if span is not None:
        span.set_attribute("jobs.outcome", status)
