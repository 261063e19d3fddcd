from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('storage', '0009_storagepool_shared'),
    ]

    operations = [
        migrations.AddField(
            model_name='imagecopy',
            name='claim',
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.AddField(
            model_name='imagecopy',
            name='claimed_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
