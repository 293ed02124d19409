"""Tags and meta: stored on the job, returned by get_result, found in the admin."""

import pytest
from django.db import connection
from django.tasks import default_task_backend
from django.tasks.exceptions import InvalidTask
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from jobs.models import Job
from tests.tasks import add, noop

pytestmark = pytest.mark.django_db


def test_tags_and_meta_are_stored_and_come_back_with_the_result():
    result = add.using(tags=["billing", "eu"], meta={"account": 42, "plan": "pro"}).enqueue(1, 2)
    job = Job.objects.get(id=result.id)
    assert (job.tags, job.meta) == (["billing", "eu"], {"account": 42, "plan": "pro"})
    again = default_task_backend.get_result(result.id)
    assert again.task.tags == ("billing", "eu")
    assert again.task.meta == {"account": 42, "plan": "pro"}
    many = noop.using(tags=["bulk"]).enqueue_many([((), {})] * 3)
    assert {tuple(j.tags) for j in Job.objects.filter(id__in=[r.id for r in many])} == {("bulk",)}
    plain = Job.objects.get(id=add.enqueue(1, 1).id)
    assert (plain.tags, plain.meta) == ([], {})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tags": "billing"}, "tags is a list of strings, not str"),
        ({"tags": 5}, "tags is a list of strings, not int"),
        ({"tags": [""]}, "A tag is a non-empty string"),
        ({"tags": [3]}, "A tag is a non-empty string"),
        ({"tags": ["x" * 101]}, "at most 100 fit"),
        ({"tags": ["nul\x00"]}, "cannot store"),
        ({"meta": ["not", "a", "dict"]}, "meta is a dict"),
        ({"meta": {"when": object()}}, "meta is not JSON"),
        ({"meta": {"text": "nul\x00"}}, "cannot store in jsonb"),
    ],
)
def test_tags_and_meta_that_cannot_be_stored_are_refused_by_name(options, message):
    with pytest.raises(InvalidTask, match=message):
        add.using(**options).enqueue(1, 2)
    assert Job.objects.count() == 0


def test_the_admin_filters_by_tag_and_searches_by_meta(admin_client):
    billing = add.using(tags=["billing"], meta={"account": 42}).enqueue(1, 2)
    other = add.using(tags=["reports"], meta={"account": 7}).enqueue(1, 2)
    plain = add.enqueue(1, 2)
    changelist = reverse("admin:jobs_job_changelist")

    def listed(**params) -> set[str]:
        body = admin_client.get(changelist, params).content.decode()
        return {r.id for r in (billing, other, plain) if r.id in body}

    assert listed(tag="billing") == {billing.id}
    assert listed(q="tag:reports") == {other.id}
    assert listed(q="meta:account=42") == {billing.id}
    assert listed(q='meta:account="42"') == set()
    # Terms nothing stored can match find nothing, and break nothing.
    for term in ("meta:account=NaN", "meta:account=1e999", "tag:nul\x00", "meta:a\x00=1"):
        response = admin_client.get(changelist, {"q": term})
        assert response.status_code == 200, term
    page = admin_client.get(changelist).content.decode()
    assert 'href="?tag=billing"' in page
    detail = admin_client.get(reverse("admin:jobs_job_change", args=[billing.id])).content.decode()
    assert f'<a href="{changelist}?tag=billing">billing</a>' in detail
    assert "&quot;account&quot;: 42" in detail


def test_the_tag_filter_reads_the_partial_index():
    add.using(tags=["billing"]).enqueue(1, 2)
    from jobs.admin.filters import tagged

    with connection.cursor() as cursor, CaptureQueriesContext(connection):
        sql, params = tagged(Job.objects.all(), "billing").query.sql_with_params()
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "jobs_job_tags_idx" in plan
