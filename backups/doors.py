"""Hook the backups doors into apps below (they never import backups): the `manage.py vm` verbs
(backups.cli) and the Backups panel of the VM page (vms.panels). Called once from BackupsConfig.ready:

    from . import doors
    doors.register()
"""

from __future__ import annotations


def register() -> None:
    from vms.panels import register_vm_panel

    from . import cli
    from .views import panel_context

    cli.register()
    register_vm_panel("backups", title="Backups", template="backups/_panel.html", context=panel_context)
