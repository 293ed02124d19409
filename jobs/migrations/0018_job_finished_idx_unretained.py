from django.contrib.postgres.operations import RemoveIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    # Workers of the previous version read finished jobs by the old index:
    # once it is gone, their prune scans the table at each heartbeat until
    # they are replaced (README, "Upgrading").
    atomic = False

    dependencies = [
        ("jobs", "0017_job_unretained_idx"),
    ]

    operations = [
        RemoveIndexConcurrently(model_name="job", name="jobs_job_finished_idx"),
        migrations.RenameIndex(
            model_name="job", old_name="jobs_job_unretained_idx", new_name="jobs_job_finished_idx"
        ),
    ]
