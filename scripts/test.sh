#!/usr/bin/env bash
# The README's test command (`make test`, also what .ci/run calls): set-up, lint, then the whole
# suite on PostgreSQL against the real qemu:///system hypervisor and libvirt's test driver, then a
# short smoke run on the embedded SQLite default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

export PORTAL_DATABASE_URL=${PORTAL_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/portal}
export PORTAL_LOG_LEVEL=WARNING

printf '\n==> Lint (ruff)\n'
.venv/bin/ruff check .

printf '\n==> Import contracts (import-linter)\n'
.venv/bin/lint-imports --no-cache

printf '\n==> Types (mypy)\n'
# The cache lives outside the clone, so a fresh clone re-checks only what changed (about 30 s -> 6 s here);
# mypy trusts a cached module only while its file's hash matches.
MYPY_CACHE_DIR=${MYPY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmportal/mypy} .venv/bin/mypy

printf '\n==> SQLite smoke run (embedded default)\n'
env -u PORTAL_DATABASE_URL .venv/bin/pytest -q -p no:cacheprovider -m "not qemu and not browser and not postgres" \
  tests/hypervisor tests/vms/test_services.py

# Two workers (pytest-xdist): tests with real VMs form one group that one worker runs in order
# (tests/conftest.py), while the other runs the rest; each worker has its own test database (test_portal_gw0, ...).
# PORTAL_TEST_WORKERS=0 runs everything in this one process.
printf '\n==> Full suite on PostgreSQL (%s, %s workers)\n' "$PORTAL_DATABASE_URL" "${PORTAL_TEST_WORKERS:-2}"
exec .venv/bin/pytest -p no:cacheprovider -q --durations=15 -n "${PORTAL_TEST_WORKERS:-2}" --dist loadgroup "$@"
