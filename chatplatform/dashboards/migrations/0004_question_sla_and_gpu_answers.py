"""SLA compliance per customer question, and GPU cost per answer that ran on the model.

Stored rollups hold figures computed under the old definitions (SLA per answer row, no count
of answers that used the GPU): they are derived data, so they are dropped here and recomputed
from the messages on first need (rollups.ensure).
"""

from django.db import migrations, models


def drop_rollups(apps, schema_editor):
    apps.get_model("dashboards", "DailySiteRollup").objects.all().delete()
    apps.get_model("dashboards", "DailySourceRollup").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("dashboards", "0003_rollup_latency_values"),
    ]

    operations = [
        migrations.RunPython(drop_rollups, migrations.RunPython.noop),
        migrations.AddField(
            model_name="dailysiterollup",
            name="questions_sla_met",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailysourcerollup",
            name="gpu_answers",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
