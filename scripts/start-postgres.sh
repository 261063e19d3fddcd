#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 (trust auth), starting Debian's cluster
# (or installing it) when needed. The server detaches and logs under /var/log/postgresql.
set -euo pipefail
HOST=127.0.0.1
PORT=${PGPORT:-5432}

ready() { pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null; }
ready && exit 0

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "  installing PostgreSQL from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null
fi
version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
if [ -z "$version" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
  pg_createcluster "$version" main >/dev/null
fi
conf=/etc/postgresql/$version/main
# Local test server: trust on loopback, as on the project's machines.
if ! grep -q "vmportal-trust" "$conf/pg_hba.conf"; then
  sed -i '1i host all all 127.0.0.1/32 trust # vmportal-trust\nhost all all ::1/128 trust # vmportal-trust\nlocal all all trust # vmportal-trust' "$conf/pg_hba.conf"
fi
echo "  starting PostgreSQL $version (log: /var/log/postgresql/)"
pg_ctlcluster --skip-systemctl-redirect "$version" main start </dev/null >/dev/null 2>&1 || true
for _ in $(seq 1 50); do ready && exit 0; sleep 0.2; done
echo "PostgreSQL did not start on $HOST:$PORT" >&2
exit 1
