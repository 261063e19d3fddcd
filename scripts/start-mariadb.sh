#!/usr/bin/env bash
# Make sure a MariaDB server answers on 127.0.0.1:3306 for user root without a password (test machines
# only: the local Neutron of the tests, tests/openstack_servers.py, whose migrations are MySQL-only),
# installing and starting Debian's mariadb-server when needed.
set -euo pipefail
HOST=127.0.0.1
PORT=${MYSQL_TCP_PORT:-3306}

ready() { mysql -h "$HOST" -P "$PORT" -u root -N -B -e 'SELECT 1' >/dev/null 2>&1; }
ready && exit 0

if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  echo "  installing MariaDB from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mariadb-server >/dev/null
fi
if ! mysqladmin ping >/dev/null 2>&1; then   # the unix socket: is the server running at all?
  echo "  starting MariaDB (log: /var/log/mysql/ or the journal)"
  if [ -x /etc/init.d/mariadb ]; then /etc/init.d/mariadb start >/dev/null 2>&1 || true
  else service mariadb start >/dev/null 2>&1 || true; fi
  for _ in $(seq 1 100); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.2; done
fi
# Debian's root logs in through the unix socket only: add root@127.0.0.1 without a password (loopback, tests).
mysql -u root -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
  GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;" >/dev/null
for _ in $(seq 1 50); do ready && exit 0; sleep 0.2; done
echo "MariaDB does not answer on $HOST:$PORT for root without a password" >&2
exit 1
