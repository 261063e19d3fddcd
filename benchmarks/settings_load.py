"""Settings of benchmarks/bench_load.py's servers: the portal's own, with the bare view's URL added.

Everything else (DEBUG, secrets, database, Redis) comes from the environment as in production.
"""

from portal.settings.base import *  # noqa: F403

ROOT_URLCONF = "benchmarks.urls_load"
