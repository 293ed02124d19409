from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built without blocking enqueues on a large jobs_job, which CREATE INDEX
    # CONCURRENTLY cannot do inside a transaction.
    atomic = False

    dependencies = [
        ("jobs", "0013_job_snoozes"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                "unique_key",
                condition=models.Q(unique_key__isnull=False),
                name="jobs_job_unique_key_idx",
            ),
        ),
    ]
