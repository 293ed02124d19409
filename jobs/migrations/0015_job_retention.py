from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models

FINISHED = ("SUCCESSFUL", "FAILED", "CANCELLED")


class Migration(migrations.Migration):
    # The column is nullable, so Postgres adds it without rewriting the
    # table. The indexes are built and dropped without blocking enqueues on
    # a large jobs_job, which CONCURRENTLY cannot do inside a transaction: the
    # finished jobs' index is built anew under another name, the old one
    # dropped, and the new one given its name.
    atomic = False

    dependencies = [
        ("jobs", "0014_job_unique_key_idx"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="retention",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                models.F("retention"),
                models.F("status"),
                models.F("finished_at"),
                condition=models.Q(retention__isnull=False, status__in=FINISHED),
                name="jobs_job_retained_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                models.F("status"),
                models.F("finished_at"),
                condition=models.Q(retention__isnull=True, status__in=FINISHED),
                name="jobs_job_unretained_idx",
            ),
        ),
        RemoveIndexConcurrently(model_name="job", name="jobs_job_finished_idx"),
        migrations.RenameIndex(
            model_name="job", old_name="jobs_job_unretained_idx", new_name="jobs_job_finished_idx"
        ),
    ]
