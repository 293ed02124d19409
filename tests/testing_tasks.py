"""Tasks for the tests of jobs.testing, each of which ends in a way a test can predict."""

from django.contrib.auth.models import User
from django.db import connection
from django.tasks import task

from jobs.exceptions import DoNotRetry, RetryJob


@task(takes_context=True, max_attempts=3)
def succeeds_on_attempt(context, attempt: int) -> int:
    if context.attempt < attempt:
        raise ValueError(f"attempt {context.attempt} failed")
    return context.attempt


@task(max_attempts=2)
def always_fails() -> None:
    raise ValueError("never works")


@task(takes_context=True, max_attempts=3)
def retries_later(context, countdown: float) -> int:
    if context.attempt == 1:
        raise RetryJob(countdown=countdown)
    return context.attempt


@task(max_attempts=5)
def gives_up() -> None:
    raise DoNotRetry("no point in trying again")


@task
def creates_user(username: str) -> int:
    return User.objects.create(username=username).id


@task
def enqueues_next(remaining: int) -> int:
    """A chain: each job enqueues the next until `remaining` is 0."""
    if remaining:
        enqueues_next.enqueue(remaining - 1)
    return remaining


@task
def enqueues_itself() -> None:
    enqueues_itself.enqueue()


@task(max_attempts=2)
def fails_in_sql(username: str) -> None:
    """Writes a user, then runs a statement that fails."""
    User.objects.create(username=username)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 / 0")
