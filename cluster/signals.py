"""Signals of the cluster app, for apps above it that keep things on hosts."""

from django.dispatch import Signal

# Sent (robustly) with `host=` whenever a host was found reachable: storage makes sure its pools exist.
host_up = Signal()

# Sent (robustly, after the commit) with `host=` when a host was fenced or declared down by an
# administrator (cluster.power): vms restarts its highly available VMs on other hosts at once.
host_down_confirmed = Signal()

# Sent (not robust: a receiver refuses with a PortalError, which undoes the registration) with `host=` and
# `storage_dir=` (None: the default) inside host_register's transaction, before the host is first read:
# storage lists the host's portal pool at that directory, so the pool is made there (host_up) rather than in
# STORAGE_DIR.
host_registering = Signal()
