#!/usr/bin/env bash
# One idempotent set-up for running and for testing the portal:
#   scripts/setup.sh          # what `make run` needs
#   scripts/setup.sh --test   # plus what the test suite needs (chromium, tini, PostgreSQL, MariaDB,
#                             # OpenStack Glance and Neutron venvs)
# Installs Debian packages that are missing, the Python venv and the project, starts libvirt's
# daemons, builds the demo guest, vendors the console JS, migrates and seeds the database.
# Re-running is fast: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-run}
VENV=$ROOT/.venv
STAMPS=$ROOT/var/stamps
mkdir -p "$STAMPS" "$ROOT/var/log"

step() { printf '\n==> %s\n' "$*"; }

# --- Python 3.12+ ----------------------------------------------------------------------------
find_python() {
  local want cand
  want=$(cat .python-version 2>/dev/null || echo 3.12)
  for cand in "${PYENV_ROOT:-$HOME/.pyenv}/versions/$want/bin/python" \
              "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python \
              "$(command -v python3.13 || true)" "$(command -v python3.12 || true)" "$(command -v python3 || true)"; do
    [ -n "$cand" ] && [ -x "$cand" ] || continue
    if "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  return 1
}

# --- Debian packages ---------------------------------------------------------------------------
APT_RUN=(libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
         libvirt-dev pkg-config gcc dnsmasq-base cpio e2fsprogs ovmf debootstrap genisoimage)
APT_TEST=(chromium openssh-client tini    # tini: PID 1 of the test namespace hosts (scripts/nshost.sh)
          xorriso isolinux syslinux-common   # the guest as a bootable ISO (scripts/build-guest-iso.sh)
          glusterfs-server glusterfs-client) # GlusterFS storage domains (scripts/gluster.sh, tests' gluster_volume)
APT_TEST+=(wrk)                              # HTTP load generator (benchmarks/bench_load.py)
missing=()
pkgs=("${APT_RUN[@]}")
[ "$MODE" = "--test" ] && pkgs+=("${APT_TEST[@]}")
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "Installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "Run as root (or install: ${missing[*]})" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >var/log/apt.log 2>&1 || {
    apt-get update -q >>var/log/apt.log 2>&1
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>var/log/apt.log 2>&1 || {
      echo "apt-get install failed; see var/log/apt.log" >&2; exit 1; }
  }
fi

# --- venv and project --------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  PY=$(find_python) || { echo "Python 3.12 or newer is required (pyenv 3.12.1 is expected: see .python-version)." >&2; exit 1; }
  step "Creating the virtualenv with $PY"
  "$PY" -m venv "$VENV"
fi
deps_hash=$(cat pyproject.toml requirements.lock 2>/dev/null | sha256sum | cut -c1-16 || true)
if [ "$(cat "$STAMPS/pip" 2>/dev/null)" != "$deps_hash" ]; then
  step "Installing Python dependencies (libvirt-python builds against the system libvirt)"
  "$VENV/bin/pip" install -q --upgrade pip >var/log/pip.log 2>&1
  if [ -f requirements.lock ]; then
    "$VENV/bin/pip" install -q -c requirements.lock -e '.[dev]' >>var/log/pip.log 2>&1 || { cat var/log/pip.log >&2; exit 1; }
  else
    "$VENV/bin/pip" install -q -e '.[dev]' >>var/log/pip.log 2>&1 || { cat var/log/pip.log >&2; exit 1; }
  fi
  echo "$deps_hash" >"$STAMPS/pip"
fi

# --- hypervisor ----------------------------------------------------------------------------------
step "Starting libvirt"
if ! scripts/start-daemons.sh; then
  echo "  WARNING: no hypervisor could be started here; the portal will use libvirt's test:///default driver." >&2
  export PORTAL_LIBVIRT_URI=${PORTAL_LIBVIRT_URI:-test:///default}
  echo "PORTAL_LIBVIRT_URI=test:///default" >var/fallback.env
else
  rm -f var/fallback.env
fi

step "Building the demo guest image"
scripts/build-guest.sh "${PORTAL_GUEST_DIR:-/var/lib/vmportal/guest}"
if [ "$MODE" = "--test" ]; then
  step "Packaging the demo guest as a bootable ISO (ISO install tests)"
  scripts/build-guest-iso.sh "${PORTAL_GUEST_DIR:-/var/lib/vmportal/guest}"
fi

# The Debian 12 cloud-init image takes 2-3 minutes to build: the test suite needs it (and the stamp
# makes re-runs instant); `make run` only says how to get it, so the first start stays fast.
DEBIAN_DIR=${PORTAL_DEBIAN_IMAGE_DIR:-/var/lib/vmportal/debian-12}
if [ "$MODE" = "--test" ]; then
  step "Building the Debian 12 cloud-init image"
  scripts/build-debian-image.sh "$DEBIAN_DIR"
elif [ ! -s "$DEBIAN_DIR/manifest.json" ]; then
  echo "  (Debian 12 cloud-init image not built: admin > Images > 'Build Debian 12 image', or" \
       "manage.py image_build debian-12 --wait; about 2-3 min)"
fi

if [ -x scripts/vendor-js.sh ]; then
  step "Vendoring front-end JavaScript (noVNC, xterm.js, tus-js-client)"
  scripts/vendor-js.sh
fi

if [ "$MODE" = "--test" ]; then
  step "Starting PostgreSQL"
  scripts/start-postgres.sh
fi

# A real Glance and Neutron for the tests (tests/openstack_servers.py): their own venvs outside .venv
# under /var/lib/vmportal/openstack (about a minute once, then instant: stamped on the pinned versions),
# Glance on PostgreSQL and Neutron on MariaDB.
if [ "$MODE" = "--test" ]; then
  step "OpenStack Glance and Neutron for the tests (venvs in ${PORTAL_OPENSTACK_DIR:-/var/lib/vmportal/openstack})"
  PY=$(find_python) || { echo "Python 3.12 or newer is required for the OpenStack venvs." >&2; exit 1; }
  scripts/openstack-venvs.sh "$PY"
  step "Starting MariaDB (the tests' Neutron)"
  scripts/start-mariadb.sh
fi

# DEBUG is off unless asked for: this checkout runs the demo, so it asks (portal/env.py reads the file
# unless the real environment says PORTAL_DEBUG=0, as a production start does: docs/deployment.md).
[ -f var/demo.env ] || printf '# Written by scripts/setup.sh: this checkout runs the demo.\nPORTAL_DEBUG=1\n' >var/demo.env

step "Migrating and seeding the database"
"$VENV/bin/python" manage.py migrate -v0
"$VENV/bin/python" manage.py collectstatic --noinput -v0
"$VENV/bin/python" manage.py setup_portal
