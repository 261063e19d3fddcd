#!/usr/bin/env bash
# Two virtualenvs OUTSIDE the portal's venv holding a real OpenStack Glance (image library) and
# Neutron (networks) for the tests, benchmarks and the demo (tests/openstack_servers.py runs them;
# scripts/openstack-dev.sh starts them for a demo). Called by `scripts/setup.sh --test`.
#   scripts/openstack-venvs.sh [PYTHON]     # PYTHON: a Python 3.12+ (default: python3)
# Layout under ${PORTAL_OPENSTACK_DIR:-/var/lib/vmportal/openstack}:
#   glance/    glance + gunicorn (serves glance.wsgi.api:application) + psycopg2 (PostgreSQL)
#   neutron/   neutron + pyuwsgi (serves neutron.wsgi.api:application) + PyMySQL (MariaDB)
# Idempotent: each venv has a stamp holding its pinned requirements and Python version, written
# LAST, so a half-built venv (interrupted install) is removed and rebuilt on the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${1:-python3}
DIR=${PORTAL_OPENSTACK_DIR:-/var/lib/vmportal/openstack}
LOG=$ROOT/var/log/openstack-venvs.log
mkdir -p "$DIR" "$ROOT/var/log"

# The pins: change them here (the stamps follow, so the venvs are rebuilt).
GLANCE_REQS=(glance==33.0.0 gunicorn==27.0.1 psycopg2-binary==2.9.13)
NEUTRON_REQS=(neutron==29.0.0 pyuwsgi==2.0.30.post1 PyMySQL==1.2.4)

pyver=$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')

build() {  # build NAME REQ...
  local name=$1; shift
  local venv=$DIR/$name stamp="$DIR/$name/.vmportal-stamp"
  local want="python=$pyver $*"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && [ -x "$venv/bin/python" ]; then
    echo "  $name: up to date ($*)"
    return 0
  fi
  echo "  $name: building $venv ($*; about 30-40 s, log: var/log/openstack-venvs.log)"
  local t0=$SECONDS
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  {
    echo "=== $(date -Is) $name: $*"
    "$venv/bin/pip" install -q --upgrade pip setuptools wheel
    "$venv/bin/pip" install -q "$@"
  } >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; echo "  $name: pip install failed (log: $LOG)" >&2; return 1; }
  "$venv/bin/pip" freeze >"$venv/.vmportal-freeze.txt" 2>>"$LOG"
  echo "$want" >"$stamp"     # last: a venv without its stamp is rebuilt
  echo "  $name: built in $((SECONDS - t0)) s"
}

build glance "${GLANCE_REQS[@]}"
build neutron "${NEUTRON_REQS[@]}"
