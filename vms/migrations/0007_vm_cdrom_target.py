"""Where the VM's CD-ROM drive is (an adopted domain's own drive keeps its target and bus)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("vms", "0006_cdrom_adopted"),
    ]

    operations = [
        migrations.AddField(
            model_name="vm",
            name="cdrom_target",
            field=models.CharField(default="hdc", help_text="Where the guest sees the drive (hdc for VMs the portal made; an adopted domain's drive keeps its own).", max_length=16, verbose_name="CD-ROM target"),
        ),
        migrations.AddField(
            model_name="vm",
            name="cdrom_bus",
            field=models.CharField(default="ide", max_length=16, verbose_name="CD-ROM bus"),
        ),
    ]
