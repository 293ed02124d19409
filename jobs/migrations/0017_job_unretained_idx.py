from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # The finished jobs under no RETAIN rule, built beside the index of every
    # finished job, which the next migration replaces with it.
    atomic = False

    dependencies = [
        ("jobs", "0016_job_retained_idx"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                models.F("status"),
                models.F("finished_at"),
                condition=models.Q(
                    retention__isnull=True, status__in=("SUCCESSFUL", "FAILED", "CANCELLED")
                ),
                name="jobs_job_unretained_idx",
            ),
        ),
    ]
