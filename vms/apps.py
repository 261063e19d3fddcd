from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self) -> None:
        # Imported here, not at module level: they import models, which need the app registry.
        from cluster.observers import register_observer
        from cluster.placement import register_load
        from networks.usage import register_network_users
        from portal.jobs import register_job_guard
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
        self._register_plugin_jobs()
        register_job_labels(JOB_LABELS)
        register_job_guard("vms.host_reachable", jobs.vm_job_guard)
        self._register_host_job_bound()
        register_live_config(live_config)
        self._register_cluster_ops()

    def _register_plugin_jobs(self) -> None:
        """External plugins attach jobs to VMs (within their scope); a VM's people hear of its jobs live."""
        # Imported here, not at module level: they import models, which need the app registry.
        from portal.jobs import register_job_audience
        from portal.plugins import register_plugin_target

        from .selectors import vm_for_plugin
        from .services import vm_job_groups

        register_plugin_target("vm", vm_for_plugin)
        register_job_audience("vm", vm_job_groups)

    def _register_cluster_ops(self) -> None:
        """Maintenance, HA, balancing and power saving: the VM side of cluster operations (vms.cluster_ops)."""
        # Imported here, not at module level: they import models, which need the app registry.
        from cluster.housekeeping import register_housekeeping
        from cluster.maintenance import BALANCE, EVACUATE, register_operation
        from cluster.signals import host_down_confirmed
        from portal.jobs.labels import register_job_labels

        from . import cluster_ops, leases

        register_operation(EVACUATE, cluster_ops.host_evacuate)
        register_operation(BALANCE, cluster_ops.cluster_balance)
        register_housekeeping("vms.ha", cluster_ops.ha_pass)
        register_housekeeping("vms.maintenance", cluster_ops.maintenance_pass)
        register_housekeeping("vms.balancing", cluster_ops.balancing_pass)
        register_housekeeping("vms.power_saving", lambda: cluster_ops.power_saving_pass(wait=False))
        register_housekeeping("vms.leases", leases.lease_pass)  # VM leases (issue #14): reminders and expiry
        host_down_confirmed.connect(cluster_ops.ha_on_host_down, dispatch_uid="vms.cluster_ops.ha")
        register_job_labels(cluster_ops.JOB_LABELS)

    def _register_host_job_bound(self) -> None:
        """At most Host.max_jobs jobs talk to one host at once (vms.host_jobs)."""
        from portal.jobs import job_finished, register_claim_gate

        from .host_jobs import host_job_gate, wake_waiting

        register_claim_gate("vms.host_max_jobs", host_job_gate)
        job_finished.connect(wake_waiting, dispatch_uid="vms.host_jobs.wake_waiting")

    def _register_scheduling(self) -> None:
        # The scheduler's view of VMs (cluster sits below vms): migrating VMs' destinations, the VMs the
        # balancers move, and what each VM asks of a host.
        from cluster.placement import register_load, register_placed_vms
        from cluster.scheduler.registry import register_host_failures, register_request_builder

        from .create_retry import recent_host_failures
        from .scheduling import migration_target_loads, placed_vms_on, vm_requests

        register_load(migration_target_loads)
        register_placed_vms(placed_vms_on)
        register_request_builder(vm_requests)
        register_host_failures(recent_host_failures)  # the recent_failures weight: creates failed per host
