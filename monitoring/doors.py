"""Hook monitoring into the apps below it (they never import monitoring): the collector as a cluster
observer, the rollup and retention chore, the VM page's Monitoring panel. Called from MonitoringConfig.ready.
"""

from __future__ import annotations


def register() -> None:
    # Imported here, not at module level: they import models, which need the app registry.
    from cluster.housekeeping import register_housekeeping
    from cluster.observers import register_observer
    from vms.panels import register_vm_panel

    from .collector import SampleObserver
    from .rollup import samples_housekeeping
    from .views import panel_context

    register_observer(SampleObserver())
    register_housekeeping("monitoring.samples", samples_housekeeping)
    register_vm_panel("monitoring", title="Monitoring", template="monitoring/_panel.html", context=panel_context)
