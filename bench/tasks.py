"""
The benchmark's tasks for this queue: bench.probe's two jobs behind `@task`.

runworker imports them by path (bench.tasks.noop), from the project root.
"""

from django.tasks import task

from bench import probe


@task
def noop() -> None:
    probe.noop()


@task
def record_start(n: int) -> None:
    probe.record_start(n)


@task
def keyed_noop(key: int) -> None:
    """A no-op under the per-key limit of bench.limits_settings."""
    probe.noop()


@task
def tenant_job(tenant: str, n: int | None = None) -> None:
    """
    A job of the neighbour phase, served tenant by tenant (bench.limits_settings'
    "tenant"): a no-op, or with n the probe that records when it started.
    """
    if n is None:
        probe.noop()
    else:
        probe.record_start(n)


@task
def batch_done(outcomes: list) -> int:
    """The callback of the workflows phase's batch: given every member's outcome."""
    return len(outcomes)
