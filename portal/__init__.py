"""Self-service virtualization portal: project package and core app."""
