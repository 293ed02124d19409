from django.db import migrations, models


class Migration(migrations.Migration):
    # A nullable column: Postgres adds it without rewriting the table, and a
    # job under no RETAIN rule stores nothing in it. Its indexes follow, each
    # in a migration of its own: built CONCURRENTLY, outside a transaction,
    # one that fails is all that runs again.

    dependencies = [
        ("jobs", "0014_job_unique_key_idx"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="retention",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
    ]
