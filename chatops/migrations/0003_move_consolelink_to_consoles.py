# ConsoleLink moves from chatops to consoles: state only, the table (chatops_consolelink) and its rows stay.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('chatops', '0002_console_links'),
        ('consoles', '0002_consolelink'),  # consoles' state has the model before chatops' lets it go
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='ConsoleLink')],
            database_operations=[],
        ),
    ]
