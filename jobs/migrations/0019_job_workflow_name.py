from django.db import migrations, models


class Migration(migrations.Migration):
    # Nullable: Postgres adds the column without rewriting the table, and a
    # job of no named workflow stores nothing in it.

    dependencies = [
        ("jobs", "0018_job_finished_idx_unretained"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="workflow_name",
            field=models.CharField(blank=True, max_length=200, null=True),
        ),
    ]
