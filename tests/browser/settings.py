"""Settings for the portal processes that browser tests start (daphne and a job worker).

The test settings, with jobs going through the database queue to a real worker process instead of
running inside the request, so pages see them progress live, as in production. The database is the
file named by PORTAL_DATA_DIR (shared with the test process).
"""

from portal.settings.test import *  # noqa: F403

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
