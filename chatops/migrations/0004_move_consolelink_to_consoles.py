# ConsoleLink moves from chatops to consoles: state only, the table (chatops_consolelink) and its rows stay.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('chatops', '0003_alter_quotarequestpost_quota_request'),
        ('consoles', '0002_consolelink'),  # consoles' state has the model before chatops' lets it go
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='ConsoleLink')],
            database_operations=[],
        ),
    ]
