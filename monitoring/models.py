"""Time series of what VMs and hosts use (issue #14): written by the collector (one getAllDomainStats call
per host and interval), rolled up into coarser resolutions and pruned by retention. Read by the charts,
the reports and the Prometheus gauges. Rows change only in monitoring.services (the collector).
"""

from __future__ import annotations

from django.db import models


class Resolution(models.TextChoices):
    """How much time one row covers: a raw sample (one collector interval), five minutes, one hour."""

    RAW = "raw", "Raw"
    FIVE_MIN = "5m", "5 minutes"
    HOUR = "1h", "1 hour"


class VMSample(models.Model):
    """What one VM used over the interval ending at `at` (rates and averages over the interval; `seconds`:
    how long of it the VM ran). vCPUs, memory and disk are the VM's allotment at that time (reports
    multiply them by `seconds`)."""

    vm = models.ForeignKey("vms.VM", on_delete=models.CASCADE, related_name="samples")
    host = models.ForeignKey("cluster.Host", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resolution = models.CharField(max_length=3, choices=Resolution.choices, default=Resolution.RAW)
    at = models.DateTimeField()
    seconds = models.FloatField(default=0, help_text="Seconds of the interval the VM ran.")
    cpu_pct = models.FloatField(default=0, help_text="CPU use, percent of the VM's vCPUs (0-100).")
    vcpus = models.PositiveSmallIntegerField(default=0)
    memory_mib = models.PositiveIntegerField(default=0)
    disk_gib = models.PositiveIntegerField(default=0)
    mem_used_bytes = models.BigIntegerField(null=True, blank=True, help_text="Guest memory in use, if known.")
    disk_read_bps = models.FloatField(default=0)
    disk_write_bps = models.FloatField(default=0)
    net_rx_bps = models.FloatField(default=0)
    net_tx_bps = models.FloatField(default=0)

    class Meta:
        indexes = [models.Index(fields=["vm", "resolution", "at"], name="vmsample_series"),
                   models.Index(fields=["resolution", "at"], name="vmsample_by_time")]
        constraints = [models.UniqueConstraint(fields=["vm", "resolution", "at"], name="vmsample_unique")]

    def __str__(self) -> str:
        return f"VM {self.vm_id} {self.resolution} @ {self.at:%Y-%m-%d %H:%M:%S}"


class HostSample(models.Model):
    """What one host carried over the interval ending at `at`."""

    host = models.ForeignKey("cluster.Host", on_delete=models.CASCADE, related_name="samples")
    resolution = models.CharField(max_length=3, choices=Resolution.choices, default=Resolution.RAW)
    at = models.DateTimeField()
    seconds = models.FloatField(default=0)
    cpu_pct = models.FloatField(default=0, help_text="CPU use of the host's running domains, percent of its CPUs.")
    mem_used_bytes = models.BigIntegerField(default=0)
    mem_total_bytes = models.BigIntegerField(default=0)
    running_domains = models.PositiveIntegerField(default=0)
    disk_read_bps = models.FloatField(default=0)
    disk_write_bps = models.FloatField(default=0)
    net_rx_bps = models.FloatField(default=0)
    net_tx_bps = models.FloatField(default=0)

    class Meta:
        indexes = [models.Index(fields=["host", "resolution", "at"], name="hostsample_series")]
        constraints = [models.UniqueConstraint(fields=["host", "resolution", "at"], name="hostsample_unique")]

    def __str__(self) -> str:
        return f"host {self.host_id} {self.resolution} @ {self.at:%Y-%m-%d %H:%M:%S}"


class DomainCounters(models.Model):
    """The cumulative counters of one running domain on one host as the collector last read them, so the
    next sample's rates (and the first one after the monitor restarts) are differences of two readings.
    `uuid` "" is the host's own row: when the host was last sampled. Kept for running domains only."""

    host = models.ForeignKey("cluster.Host", on_delete=models.CASCADE, related_name="+")
    uuid = models.CharField(max_length=36, blank=True)
    at = models.DateTimeField()
    domain_id = models.IntegerField(default=-1, help_text="libvirt's id of the running domain (a new one: it restarted).")
    cpu_time_ns = models.BigIntegerField(null=True, blank=True)
    rd_bytes = models.BigIntegerField(default=0)
    wr_bytes = models.BigIntegerField(default=0)
    rx_bytes = models.BigIntegerField(default=0)
    tx_bytes = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "uuid"], name="domaincounters_unique")]

    def __str__(self) -> str:
        return f"counters of {self.uuid or 'the host'} on host {self.host_id}"
