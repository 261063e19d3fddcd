from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self) -> None:
        # Imported here, not at module level: they import models, which need the app registry.
        from cluster.observers import register_observer
        from cluster.placement import register_load
        from networks.usage import register_network_users
        from portal.jobs.labels import register_job_labels
        from portal.jobs.selectors import register_target_visibility
        from portal.live import register_live_config
        from quotas.usage import register_usage

        from . import jobs  # noqa: F401  (registers the job handlers)
        from .lifecycle import JOB_LABELS
        from .reconcile import VMObserver
        from .selectors import network_nic_users, vm_host_loads, vm_owned_ids, vm_quota_usage
        from .views import live_config

        register_usage(vm_quota_usage)
        register_network_users(network_nic_users)
        register_load(vm_host_loads)
        self._register_scheduling()
        register_observer(VMObserver())
        register_target_visibility("vm", lambda user: vm_owned_ids(user=user))
        register_job_labels(JOB_LABELS)
        register_live_config(live_config)

    def _register_scheduling(self) -> None:
        # The scheduler's view of VMs (cluster sits below vms): migrating VMs' destinations, the VMs the
        # balancers move, and what each VM asks of a host.
        from cluster.placement import register_load, register_placed_vms
        from cluster.scheduler.registry import register_request_builder

        from .scheduling import migration_target_loads, placed_vms_on, vm_requests

        register_load(migration_target_loads)
        register_placed_vms(placed_vms_on)
        register_request_builder(vm_requests)
