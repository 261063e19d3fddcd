"""Signals of the cluster app, for apps above it that keep things on hosts."""

from django.dispatch import Signal

# Sent (robustly) with `host=` whenever a host was found reachable: storage makes sure its pools exist.
host_up = Signal()

# Sent (robustly, after the commit) with `host=` when a host was fenced or declared down by an
# administrator (cluster.power): vms restarts its highly available VMs on other hosts at once.
host_down_confirmed = Signal()
