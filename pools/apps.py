from django.apps import AppConfig
from django.db.models import Q


class PoolsConfig(AppConfig):
    name = "pools"
    verbose_name = "VM pools"

    def ready(self) -> None:
        # Imported here, not at module level: they import models, which need the app registry.
        from cluster.housekeeping import register_housekeeping
        from vms.access import register_action_guard, register_visibility_grant
        from vms.panels import register_vm_panel

        from .selectors import taken_vm_ids
        from .services import pool_vm_guard, pools_replenish_all
        from .views import panel_context, panel_shows

        # The taker of a pool VM sees and uses it like their own while they hold it; they may not delete it.
        register_visibility_grant("pools.taken", lambda user: Q(pk__in=taken_vm_ids(user)))
        register_action_guard("pools.taker", pool_vm_guard)
        register_housekeeping("pools.replenish", pools_replenish_all)
        register_vm_panel("pool", title="Pool", template="pools/_panel.html", context=panel_context,
                          shows=panel_shows)
