#!/usr/bin/env bash
# A local OpenStack Glance and Neutron for the demo (no Keystone), in the background:
#   scripts/openstack-dev.sh start    # prints the endpoints and the openstack.connect() kwargs
#   scripts/openstack-dev.sh status   # exit 0 when both answer
#   scripts/openstack-dev.sh stop     # ends them (by PID) and drops their databases
# State (PIDs, ports, config dirs, image store) in var/openstack/, logs in var/log/openstack-*.log;
# databases vmportal_glance_demo (PostgreSQL) and vmportal_neutron_demo (MariaDB). The venvs come from
# `scripts/setup.sh --test` (scripts/openstack-venvs.sh); the implementation is tests/openstack_servers.py.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  start|stop|status) ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
[ "$1" = start ] && { scripts/start-postgres.sh; scripts/start-mariadb.sh; }
exec "$PY" -m tests.openstack_servers "$1"
