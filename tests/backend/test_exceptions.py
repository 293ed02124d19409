"""The queue's exceptions: one base class, and class paths that stored errors rely on."""

import pytest
from django.utils.module_loading import import_string

from jobs.exceptions import (
    DoNotRetry,
    ExecutorDied,
    JobCancelled,
    JobInterrupted,
    JobsError,
    JobStateError,
    JobTimeout,
    RetryJob,
    WorkerLost,
    class_path,
)
from jobs.schedules import TimingError


@pytest.mark.parametrize(
    "error_class",
    [
        JobTimeout,
        ExecutorDied,
        JobInterrupted,
        WorkerLost,
        JobCancelled,
        JobStateError,
        RetryJob,
        DoNotRetry,
        TimingError,
    ],
)
def test_every_exception_of_the_queue_is_a_jobs_error(error_class):
    assert issubclass(error_class, JobsError)
    assert issubclass(error_class, Exception)


@pytest.mark.parametrize(
    "error_class", [JobTimeout, ExecutorDied, JobInterrupted, WorkerLost, JobCancelled]
)
def test_recorded_classes_keep_the_path_their_stored_errors_name(error_class):
    # Job rows name these classes by path, and TaskError.exception_class imports it back.
    path = class_path(error_class)
    assert path == f"jobs.exceptions.{error_class.__name__}"
    assert import_string(path) is error_class
