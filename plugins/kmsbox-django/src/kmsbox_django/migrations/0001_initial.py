"""The plugin's tables."""

# ruff: noqa: RUF012 - Django reads these class attributes as written by makemigrations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="IndexKey",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=200)),
                ("version", models.IntegerField()),
                ("active_from", models.BigIntegerField()),
                ("retired", models.BooleanField(default=False)),
                ("sealed_key", models.BinaryField()),
            ],
            options={"db_table": "kmsbox_orm_index_keys"},
        ),
        migrations.CreateModel(
            name="RewriteCheckpoint",
            fields=[
                ("job", models.CharField(max_length=400, primary_key=True, serialize=False)),
                ("sealed", models.BinaryField()),
            ],
            options={"db_table": "kmsbox_orm_checkpoints"},
        ),
        migrations.AddConstraint(
            model_name="indexkey",
            constraint=models.UniqueConstraint(fields=("name", "version"), name="kmsbox_orm_index_key_version"),
        ),
    ]
