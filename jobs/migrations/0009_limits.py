import django.db.models.lookups
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # The claim's new indexes are built before its old one goes, without
    # blocking enqueues on a large jobs_job, which CREATE INDEX CONCURRENTLY
    # cannot do inside a transaction.
    atomic = False

    dependencies = [
        ("jobs", "0008_job_trace_context"),
    ]

    operations = [
        migrations.CreateModel(
            name="LimitKey",
            fields=[
                ("key", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=100)),
                ("concurrency", models.PositiveIntegerField(blank=True, null=True)),
                ("rate", models.PositiveIntegerField(blank=True, null=True)),
                ("period", models.FloatField(blank=True, null=True)),
                ("burst", models.PositiveIntegerField(blank=True, null=True)),
                ("running", models.IntegerField(default=0)),
                ("tokens", models.FloatField(default=0)),
                ("refilled_at", models.DateTimeField()),
            ],
            options={
                "db_table": "jobs_limit_key",
                "ordering": ["key"],
                "default_permissions": ("view",),
                "indexes": [
                    models.Index(
                        models.F("key"),
                        condition=models.Q(("running__gt", 0)),
                        name="jobs_limit_key_running_idx",
                    ),
                    models.Index(models.F("name"), models.F("key"), name="jobs_limit_key_name_idx"),
                ],
            },
        ),
        migrations.AddField(
            model_name="job",
            name="limit_key",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.AddField(
            model_name="job",
            name="shared_limit_key",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                models.F("queue"),
                models.OrderBy(models.F("priority"), descending=True),
                models.F("run_at"),
                models.F("id"),
                condition=models.Q(("limit_key__isnull", True), ("status", "READY")),
                name="jobs_job_claim_plain_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                models.F("queue"),
                models.F("limit_key"),
                models.OrderBy(models.F("priority"), descending=True),
                models.F("run_at"),
                models.F("id"),
                condition=models.Q(("limit_key__isnull", False), ("status", "READY")),
                name="jobs_job_claim_limited_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                models.F("queue"),
                django.db.models.lookups.IsNull(models.F("limit_key"), True),
                models.F("run_at"),
                condition=models.Q(("status", "READY")),
                name="jobs_job_due_idx",
            ),
        ),
        RemoveIndexConcurrently(model_name="job", name="jobs_job_claim_idx"),
        RemoveIndexConcurrently(model_name="job", name="jobs_job_next_due_idx"),
    ]
