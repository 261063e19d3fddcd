# ConsoleLink moves from chatops to consoles: state only, the table (chatops_consolelink) and its rows stay.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def _move_content_type(apps, schema_editor, *, old: str, new: str) -> None:
    """Keep the content type (and the permissions that point at it) under the model's new app label."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    moving = ContentType.objects.filter(app_label=old, model="consolelink")
    if ContentType.objects.filter(app_label=new, model="consolelink").exists():
        moving.delete()
    else:
        moving.update(app_label=new)


def forwards(apps, schema_editor):
    _move_content_type(apps, schema_editor, old="chatops", new="consoles")


def backwards(apps, schema_editor):
    _move_content_type(apps, schema_editor, old="consoles", new="chatops")


class Migration(migrations.Migration):

    dependencies = [
        ('consoles', '0001_initial'),
        ('chatops', '0002_console_links'),  # the table exists
        ('vms', '0002_snapshots'),
        ('contenttypes', '0002_remove_content_type_name'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='ConsoleLink',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('token_hash', models.CharField(max_length=64, unique=True)),
                        ('kind', models.CharField(default='screen', max_length=16)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('expires_at', models.DateTimeField()),
                        ('used_at', models.DateTimeField(blank=True, null=True)),
                        ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('vm', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='vms.vm')),
                    ],
                    options={
                        'db_table': 'chatops_consolelink',
                        'ordering': ['-created_at'],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(forwards, backwards),
    ]
