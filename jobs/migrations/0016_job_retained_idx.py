from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built without blocking enqueues on a large jobs_job, which CREATE INDEX
    # CONCURRENTLY cannot do inside a transaction.
    atomic = False

    dependencies = [
        ("jobs", "0015_job_retention"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                models.F("retention"),
                models.F("status"),
                models.F("finished_at"),
                condition=models.Q(
                    retention__isnull=False, status__in=("SUCCESSFUL", "FAILED", "CANCELLED")
                ),
                name="jobs_job_retained_idx",
            ),
        ),
    ]
