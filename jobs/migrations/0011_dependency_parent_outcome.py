from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0010_workflows"),
    ]

    operations = [
        migrations.AddField(
            model_name="dependency",
            name="parent_outcome",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
