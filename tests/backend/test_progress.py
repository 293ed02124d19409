"""
Reading a job's progress from your own code (jobs.progress.get_progress):
what the task reported, None before any report, and a clear error for an id
that names no job. A real worker's reports: tests/workflows/test_workflows.py.
"""

import pytest
from asgiref.sync import async_to_sync
from django.tasks.exceptions import TaskResultDoesNotExist

from jobs.models import Job
from jobs.progress import Progress, aget_progress, get_progress
from tests.docs.pages import python_blocks, section
from tests.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_job_that_reported_nothing_has_no_progress():
    result = add.enqueue(1, 2)
    assert get_progress(result) is None


def test_the_last_report_is_read_by_result_or_by_id():
    result = add.enqueue(1, 2)
    Job.objects.filter(id=result.id).update(progress=0.25, progress_message="1 of 4")
    assert get_progress(result) == Progress(0.25, "1 of 4")
    assert get_progress(str(result.id)) == Progress(0.25, "1 of 4")
    # From a sync caller, as a view would: the read runs on this thread's connection.
    assert async_to_sync(aget_progress)(result.id) == Progress(0.25, "1 of 4")


@pytest.mark.parametrize("task_id", ["not-a-uuid", "0190a0c4-1d3e-7000-8000-000000000000"])
def test_an_id_that_names_no_job_is_refused(task_id):
    with pytest.raises(TaskResultDoesNotExist):
        get_progress(task_id)


def test_the_readme_example_prints_the_last_report(capsys):
    [block] = python_blocks(section("Report and read progress"))
    result = add.enqueue(1, 2)
    Job.objects.filter(id=result.id).update(progress=0.4, progress_message="40 of 100 rows")
    exec(block, {"result": result})
    assert capsys.readouterr().out == "40% 40 of 100 rows\n"
