"""Who does what when several monitors run (several machines): PostgreSQL session advisory locks.

Each monitor keeps one dedicated connection (not Django's, never pooled) and holds on it:
- the chores lock: the monitor holding it is the leader and alone runs the shared periodic work (stale
  jobs reaped, every app's housekeeping: HA, maintenance, balancing, power saving, backup schedules,
  expired uploads, storage refresh), once per interval;
- one lock per host it watches: a host's events and reconcile are handled by exactly one monitor.

Session locks rather than `pg_try_advisory_xact_lock` per run: a transaction lock only keeps two runs
from overlapping (a second monitor would run the same chores a moment later, each interval), while a
session lock is leadership. It goes with its session: a monitor that dies (killed, its machine gone)
loses its connection, PostgreSQL releases its locks, and another monitor takes them on its next turn
(about a second). TCP keepalives on the session make the server notice a vanished machine in
~25 s instead of hours. A connection pooler in transaction mode (pgbouncer) would break session locks:
the monitor connects to PostgreSQL directly.

Without PostgreSQL (SQLite: one process, the demo) there is nothing to share: every lock is granted.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections

log = logging.getLogger("cluster.monitor")

# Two-key advisory locks (int4, int4): the first names the kind, the second the object. Advisory locks
# are per database, so two portals on one PostgreSQL server do not meet.
_NAMESPACE = 0x766D70  # "vmp"
CHORES = (_NAMESPACE, 0)
HOST_KIND = _NAMESPACE + 1

# Server-side keepalives for the lock session: a monitor whose machine vanished without closing its
# connection loses its locks within idle + interval x count seconds.
_KEEPALIVES = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"


def host_lock(host_id: int) -> tuple[int, int]:
    return (HOST_KIND, host_id)


class MonitorLocks:
    """The advisory locks one monitor holds, on its own connection (used from one thread).

    `acquire` is non-blocking and idempotent (a held lock is not taken twice, so one `release` frees it);
    `check` finds out whether the session is still there; when it is not, every lock is gone with it.
    """

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self.shared = connections[alias].vendor == "postgresql"
        self.held: set[tuple[int, int]] = set()
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            import psycopg  # only with PostgreSQL (the SQLite demo needs no driver for it)

            params = dict(connections[self.alias].get_connection_params())  # Django's own, never a pool
            params["options"] = f"{params.get('options', '')} {_KEEPALIVES}".strip()
            params.setdefault("application_name", "portal-monitor")
            self._conn = psycopg.connect(**params, autocommit=True)
        return self._conn

    def acquire(self, key: tuple[int, int]) -> bool:
        """Take `key` if no other monitor holds it; True when this monitor holds it (now or already)."""
        if not self.shared:
            return True
        if key in self.held:
            return True
        try:
            row = self._connection().execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
        except Exception as exc:  # the database is away: no lock, try again next turn
            log.warning("advisory lock %s: %s", key, exc)
            self._lost()
            return False
        if row and row[0]:
            self.held.add(key)
            return True
        return False

    def holds(self, key: tuple[int, int]) -> bool:
        return not self.shared or key in self.held

    def release(self, key: tuple[int, int]) -> None:
        if not self.shared or key not in self.held:
            return
        self.held.discard(key)
        try:
            self._connection().execute("SELECT pg_advisory_unlock(%s, %s)", key)
        except Exception as exc:  # the session is gone, and its locks with it
            log.warning("advisory unlock %s: %s", key, exc)
            self._lost()

    def check(self) -> bool:
        """Is the lock session alive? When it is not, every lock it held is forgotten (False)."""
        if not self.shared or self._conn is None:
            return True
        try:
            self._conn.execute("SELECT 1")
            return True
        except Exception as exc:
            log.warning("the monitor's lock session to the database was lost (%s): its locks are gone", exc)
            self._lost()
            return False

    def _lost(self) -> None:
        self.held.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing more to close
                pass

    def close(self) -> None:
        """Give every lock back (closing the session releases them all)."""
        self._lost()
