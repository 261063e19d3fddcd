"""Signals of the cluster app, for apps above it that keep things on hosts."""

from django.dispatch import Signal

# Sent (robustly) with `host=` whenever a host was found reachable: storage makes sure its pools exist.
host_up = Signal()
