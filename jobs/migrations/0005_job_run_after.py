from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0004_job_fillfactor"),
    ]

    operations = [
        # Nullable and without a default: Postgres adds it without rewriting the table.
        migrations.AddField(
            model_name="job",
            name="run_after",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
