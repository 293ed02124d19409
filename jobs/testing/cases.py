"""A mixin for Django's TestCase and TransactionTestCase."""

from collections.abc import Mapping, Sequence
from typing import Any

from django.tasks import TaskResult
from django.tasks.base import Task

from .enqueued import EnqueuedJobs
from .runner import run_due_jobs


class JobsTestMixin:
    """
    Records the tasks each test enqueues, in `self.enqueued_jobs`, and runs
    the queue's due jobs in the test's process:

        class SignupTests(JobsTestMixin, TestCase):
            def test_welcome_email(self):
                ...
                self.assertEnqueued(send_welcome_email, args=[delivery.id])
                self.run_due_jobs()

    A subclass that overrides setUp() calls super().setUp() first.
    """

    enqueued_jobs: EnqueuedJobs
    # The same function as jobs.testing.run_due_jobs, and its arguments.
    run_due_jobs = staticmethod(run_due_jobs)

    def setUp(self) -> None:
        super().setUp()
        self.enqueued_jobs = self.enterContext(EnqueuedJobs())

    def assertEnqueued(
        self,
        task: Task | str,
        *,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        count: int | None = None,
    ) -> list[TaskResult]:
        return self.enqueued_jobs.assert_enqueued(task, args=args, kwargs=kwargs, count=count)

    def assertNotEnqueued(
        self,
        task: Task | str,
        *,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.enqueued_jobs.assert_not_enqueued(task, args=args, kwargs=kwargs)

    def assertNothingEnqueued(self) -> None:
        self.enqueued_jobs.assert_nothing_enqueued()
