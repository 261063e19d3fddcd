"""Settings for every environment; each knob is switched by a PORTAL_* variable read in portal.env."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

from portal import env

BASE_DIR = env.BASE_DIR
# DEBUG is off unless asked for: `make run` (the demo) and the test settings set PORTAL_DEBUG=1.
DEBUG = env.get_bool("DEBUG", False)

if DEBUG:
    SECRET_KEY = env.get_str("SECRET_KEY", "dev-insecure-secret-key-change-me")
else:
    SECRET_KEY = env.require("SECRET_KEY", "Generate one with: python3 -c 'import secrets; "
                                           "print(secrets.token_urlsafe(50))'. ")

# Production names its host names explicitly (a comma-separated list, e.g. portal.example.org).
ALLOWED_HOSTS = (env.get_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"]) if DEBUG
                 else env.require("ALLOWED_HOSTS", "The portal's host names, comma-separated. ").split(","))
ALLOWED_HOSTS = [host.strip() for host in ALLOWED_HOSTS if host.strip()]
CSRF_TRUSTED_ORIGINS = env.get_list(
    "CSRF_TRUSTED_ORIGINS", ["http://127.0.0.1:8000", "http://localhost:8000"]
)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "channels",
    "django_tasks_db",
    "axes",  # web login lockout (issue #13)
    # The core first, then the domain apps from the bottom of the import graph up (docs/architecture.md).
    "portal",
    "accounts",
    "quotas",
    "cluster",
    "storage",
    "networks",
    "vms",
    "consoles",
    "backups",
    "monitoring",
    "pools",
    "reports",
    "metrics",
    "clouds",
    "chatops",
]

MIDDLEWARE = [
    # Request id, user and VM into the log records of this request (portal.logcontext; issue #13). First,
    # so that what the others answer themselves (HTTPS redirect, bad Host, static files) has an id too; the
    # user is read when a line is written, once AuthenticationMiddleware has run.
    "portal.logcontext.RequestContextMiddleware",
    # Request durations for Prometheus (vmportal_http_request_duration_seconds; metrics/middleware.py,
    # issue #14): second, so that the time of everything below it is counted.
    "metrics.middleware.RequestDurationMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy from SECURE_CSP (the hardening block at the end; issue #13).
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "portal.static_files.StaticFilesMiddleware",  # WhiteNoise, async-capable (portal/static_files.py)
    # Errors Django itself answers under /api/ (unknown URL, 500, bad Host) become the API's JSON.
    "portal.api.api_json_errors_middleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Web login lockout after repeated failures (django-axes; last, as axes asks; issue #13).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.portal",
                "django.template.context_processors.csp",  # csp_nonce for any inline <script nonce=...>
            ],
        },
    },
]

# --- Database: SQLite embedded default, PostgreSQL in production (PORTAL_DATABASE_URL) ---
DATA_DIR = env.get_str("DATA_DIR", str(BASE_DIR / "var"))


def _database(url: str | None) -> dict:
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": f"{DATA_DIR}/portal.sqlite3",
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
        }
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured("PORTAL_DATABASE_URL must be a postgresql:// URL")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "portal",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": 0,
        **_pool_options(),
    }


def _pool_options() -> dict:
    """PORTAL_DATABASE_POOL_MAX > 0: this process keeps a pool of at most that many PostgreSQL connections
    (psycopg_pool through Django) instead of one connection per request thread: under ASGI each concurrent
    request has its own thread, and 50 clients on one process would take 50 of PostgreSQL's 100. A request
    waits up to PORTAL_DATABASE_POOL_TIMEOUT seconds for a free connection. The web tier turns it on
    (portal.gunicorn_conf); the job workers and the monitor have a bounded number of threads."""
    size = env.get_int("DATABASE_POOL_MAX", 0)
    if size < 0:
        raise ImproperlyConfigured(f"PORTAL_DATABASE_POOL_MAX must be 0 or more (got {size})")
    if not size:
        return {}
    return {"OPTIONS": {"pool": {"min_size": min(2, size), "max_size": size,
                                 "timeout": env.get_float("DATABASE_POOL_TIMEOUT", 10.0)}}}


DATABASES = {"default": _database(env.get("DATABASE_URL"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channels: in-memory by default, Redis for several daphne processes (PORTAL_REDIS_URL) ---
_redis = env.get("REDIS_URL")
if _redis:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # socket_timeout None: redis-py 8 would drop idle consumers after 5 s.
            # prefix (PORTAL_REDIS_PREFIX): portals or test runs sharing one Redis keep their channels apart.
            "CONFIG": {"hosts": [{"address": _redis, "socket_timeout": None}], "capacity": 500,
                       "prefix": env.get_str("REDIS_PREFIX", "asgi")},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 500}}}

# --- Processes: web processes `runportal` starts (gunicorn with uvicorn workers, portal.gunicorn_conf) ---
WEB_WORKERS = env.get_int("WEB_WORKERS", 2)

# --- Tasks: django.tasks with the durable database backend (django-tasks-db) ---
TASKS = {
    "default": {
        "BACKEND": env.get_str("TASKS_BACKEND", "django_tasks_db.DatabaseBackend"),
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "vms:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.get_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
    # DRF's parsers, with a JSON parser that answers 400 (not 500) for a body nested too deeply.
    "DEFAULT_PARSER_CLASSES": [
        "portal.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # Only the token endpoint is throttled (password guessing); other views have no throttle.
    "DEFAULT_THROTTLE_RATES": {"token": env.get_str("API_TOKEN_RATE", "10/minute")},
}
# Reverse proxies in front of the portal that append the client to X-Forwarded-For. 0 (default): none,
# the socket's peer is the client and X-Forwarded-For is ignored (a client could write anything there).
# One rule for the API throttle and the console audit (portal.net); DRF reads it as NUM_PROXIES.
TRUSTED_PROXIES = env.get_int("TRUSTED_PROXIES", 0)
if TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured(f"PORTAL_TRUSTED_PROXIES must be 0 or more (got {TRUSTED_PROXIES})")
REST_FRAMEWORK["NUM_PROXIES"] = TRUSTED_PROXIES
SPECTACULAR_SETTINGS = {
    "TITLE": "VM Portal API",
    "DESCRIPTION": "Self-service virtual machines on KVM/QEMU through libvirt.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

# One-time tokens (console tickets, share and console links, Slack links) are cut out of request
# lines and messages before any handler writes them: portal.log_redaction.
_REDACT = ["redact_tokens"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_tokens": {"()": "portal.log_redaction.RedactTokens"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "django.server": {"()": "django.utils.log.ServerFormatter", "format": "[{server_time}] {message}",
                          "style": "{"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": _REDACT},
        # Django's own runserver log handler, redefined here so its logger can carry the filter.
        "django.server": {"class": "logging.StreamHandler", "formatter": "django.server", "level": "INFO"},
    },
    "root": {"handlers": ["console"], "level": env.get_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django.tasks": {"level": "WARNING"},
        "django.request": {"filters": _REDACT},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False, "filters": _REDACT},
        "django.channels.server": {"filters": _REDACT},
        "daphne.access": {"filters": _REDACT},
        # uvicorn under gunicorn (portal.gunicorn_conf): its access log and its websocket handshake lines
        # (with console tickets in their query strings). Through the root handler at the root's level;
        # uvicorn's gunicorn worker would otherwise give them gunicorn's handlers, unfiltered.
        "uvicorn.access": {"filters": _REDACT, "propagate": True, "level": "NOTSET"},
        "uvicorn.error": {"filters": _REDACT, "propagate": True, "level": "NOTSET"},
    },
}

# --- The hypervisor ---
# URI of the default host created at set-up; more hosts are added in the admin.
LIBVIRT_URI = env.get_str("LIBVIRT_URI", "qemu:///system")
# A host that does not answer: opening a connection gives up after CONNECT_TIMEOUT seconds, and an open
# connection whose peer misses KEEPALIVE_COUNT keepalives sent every KEEPALIVE_INTERVAL seconds is
# dropped (its calls fail within about interval x (count + 1) s; the host is marked non-responsive).
LIBVIRT_CONNECT_TIMEOUT = env.get_float("LIBVIRT_CONNECT_TIMEOUT", 10.0)
LIBVIRT_KEEPALIVE_INTERVAL = env.get_int("LIBVIRT_KEEPALIVE_INTERVAL", 3)
LIBVIRT_KEEPALIVE_COUNT = env.get_int("LIBVIRT_KEEPALIVE_COUNT", 3)
# Heartbeats (the monitor's, every RECONCILE_SECONDS, sooner with backoff while a host fails): an up host
# is non-responsive after this many failures in a row, and down after that long non-responsive.
HOST_NON_RESPONSIVE_FAILURES = env.get_int("HOST_NON_RESPONSIVE_FAILURES", 2)
HOST_DOWN_AFTER_SECONDS = env.get_int("HOST_DOWN_AFTER_SECONDS", 300)
# Scheduler plugins (docs/scheduler.md): dotted paths of Filter/Weight/Balancer classes, comma-separated;
# policies as JSON (inline, or "@/path/to/policies.json"). Checked at start-up (scheduler.E001-E003).
SCHEDULER_PLUGINS = env.get_list("SCHEDULER_PLUGINS", [])
_policies_text = env.get_str("SCHEDULER_POLICIES", "").strip()
if _policies_text.startswith("@"):
    _policies_text = Path(_policies_text[1:]).read_text()
try:
    SCHEDULER_POLICIES = json.loads(_policies_text) if _policies_text else {}
except ValueError as _exc:
    raise ImproperlyConfigured(f"PORTAL_SCHEDULER_POLICIES is not valid JSON: {_exc}") from None

# Live migration: a migration still running after this long is aborted (the VM stays on its source);
# the longest pause libvirt may allow at the switch-over (0: QEMU's default, 300 ms).
MIGRATION_TIMEOUT_SECONDS = env.get_int("MIGRATION_TIMEOUT_SECONDS", 600)
MIGRATION_MAX_DOWNTIME_MS = env.get_int("MIGRATION_MAX_DOWNTIME_MS", 0)
# A create that fails on its host for a host reason is placed again on another host, at most this many
# times; hosts where creates failed in the last HOST_FAILURE_WINDOW_SECONDS are avoided by the scheduler
# (the recent_failures weight).
CREATE_RETRY_HOSTS = env.get_int("CREATE_RETRY_HOSTS", 2)
HOST_FAILURE_WINDOW_SECONDS = env.get_int("HOST_FAILURE_WINDOW_SECONDS", 600)
# A job that waits for its host (Host.max_jobs running there) is offered to a worker again when a job
# on that host finishes, and at the latest after this many seconds (the monitor's housekeeping).
JOB_HOST_WAIT_RECHECK_SECONDS = env.get_int("JOB_HOST_WAIT_RECHECK_SECONDS", 30)
# auto: KVM where it really boots a guest (probed once per host), plain QEMU emulation otherwise.
DOMAIN_TYPE = env.get_str("DOMAIN_TYPE", "auto")
# Directory of the libvirt dir pool that holds images and VM disks.
STORAGE_POOL = env.get_str("STORAGE_POOL", "vmportal")
STORAGE_DIR = env.get_str("STORAGE_DIR", "/var/lib/vmportal/images")
# --- backups (issue #11) ---
# The backup storage domain on each host (a dir pool with content "backup"): backup files of the VMs
# there. A full backup runs every BACKUP_FULL_EVERY-th time of a chain at most; schedules say more.
BACKUP_POOL = env.get_str("BACKUP_POOL", "vmportal-backups")
BACKUP_DIR = env.get_str("BACKUP_DIR", "/var/lib/vmportal/backups")
# An incremental backup is reserved at this percentage of the disks' allocated size (then charged by
# its real size); a backup job that has not finished after this long is aborted.
BACKUP_INCREMENTAL_ESTIMATE_PERCENT = env.get_int("BACKUP_INCREMENTAL_ESTIMATE_PERCENT", 25)
BACKUP_TIMEOUT_SECONDS = env.get_int("BACKUP_TIMEOUT_SECONDS", 6 * 3600)
# Pull backups: the NBD export (on the VM host's loopback, no TLS, no auth) is ended, and the backup
# marked failed, when it has not been finished after this long; its port is one of this range that no
# other export on that host uses (and, for a host on this machine, free here).
BACKUP_PULL_TIMEOUT_SECONDS = env.get_int("BACKUP_PULL_TIMEOUT_SECONDS", 12 * 3600)
BACKUP_NBD_PORT_MIN = env.get_int("BACKUP_NBD_PORT_MIN", 10809)
BACKUP_NBD_PORT_MAX = env.get_int("BACKUP_NBD_PORT_MAX", 10908)
# --- end backups ---
GUEST_DIR = env.get_str("GUEST_DIR", "/var/lib/vmportal/guest")
# Where scripts/build-debian-image.sh puts the Debian 12 cloud-init image (the image.build job runs it).
DEBIAN_IMAGE_DIR = env.get_str("DEBIAN_IMAGE_DIR", "/var/lib/vmportal/debian-12")
# The image library. Uploads and URL downloads are staged here on the portal server, probed and
# converted, then streamed into a host's pool; the staging files are removed afterwards.
IMAGE_STAGING_DIR = env.get_str("IMAGE_STAGING_DIR", f"{DATA_DIR}/staging")
# Largest file accepted from an upload, a URL or a host path, and largest virtual size of an image.
IMAGE_MAX_BYTES = env.get_int("IMAGE_MAX_BYTES", 64 * 1024**3)
IMAGE_MAX_VIRTUAL_BYTES = env.get_int("IMAGE_MAX_VIRTUAL_BYTES", 2 * 1024**4)
# Directories administrators may import host files from (colon-separated); nothing else is read.
IMAGE_IMPORT_DIRS = [d for d in env.get_str("IMAGE_IMPORT_DIRS", "/srv/images").split(":") if d]
# A URL import that receives nothing for this long fails; an upload idle this long is removed.
IMAGE_URL_TIMEOUT_SECONDS = env.get_int("IMAGE_URL_TIMEOUT_SECONDS", 30)
# A URL download is stopped after this long in all, and when, after IMAGE_URL_GRACE_SECONDS, it has
# averaged less than IMAGE_URL_MIN_BYTES_PER_SECOND (a server dripping bytes holds no worker for days).
IMAGE_URL_MAX_SECONDS = env.get_int("IMAGE_URL_MAX_SECONDS", 3600)
IMAGE_URL_GRACE_SECONDS = env.get_int("IMAGE_URL_GRACE_SECONDS", 120)
IMAGE_URL_MIN_BYTES_PER_SECOND = env.get_int("IMAGE_URL_MIN_BYTES_PER_SECOND", 32 * 1024)
# Users' URL imports may not reach loopback, private, link-local, multicast or reserved addresses (the
# server must not be made to fetch from the inside); these networks (comma-separated CIDRs, e.g. an
# internal mirror's "10.1.2.0/24") are allowed anyway. Administrators' imports may reach any address.
IMAGE_URL_ALLOWED_NETWORKS = [n.strip() for n in env.get_str("IMAGE_URL_ALLOWED_NETWORKS", "").split(",")
                              if n.strip()]
# At most this many uploads open (receiving, complete or being imported) and import jobs running or
# queued per user at once.
UPLOADS_PER_USER = env.get_int("UPLOADS_PER_USER", 4)
IMAGE_IMPORTS_PER_USER = env.get_int("IMAGE_IMPORTS_PER_USER", 4)
UPLOAD_EXPIRY_SECONDS = env.get_int("UPLOAD_EXPIRY_SECONDS", 24 * 3600)
# An image build (debootstrap, apt, mkfs) still running after this long is stopped and the job fails.
IMAGE_BUILD_TIMEOUT_SECONDS = env.get_int("IMAGE_BUILD_TIMEOUT_SECONDS", 1800)
# The library page uploads in chunks of this size (each a tus PATCH); a dropped chunk is sent again.
IMAGE_UPLOAD_CHUNK_BYTES = env.get_int("IMAGE_UPLOAD_CHUNK_BYTES", 8 * 1024**2)
# Tells this portal's domains from other portals' and hand-made ones on a shared libvirtd.
INSTANCE_ID = env.get_str("INSTANCE_ID", "default")
DOMAIN_PREFIX = env.get_str("DOMAIN_PREFIX", "vmp")
GRAPHICS_LISTEN = env.get_str("GRAPHICS_LISTEN", "127.0.0.1")
STOP_TIMEOUT_SECONDS = env.get_int("STOP_TIMEOUT_SECONDS", 90)
# --- VM leases (issue #14): the site's lease policy; a group's LeasePolicy (admin) overrides it field by field.
# Days; 0 means none/unlimited. Reminders are sent this many days before expiry, each once.
LEASE_DEFAULT_DAYS = env.get_int("LEASE_DEFAULT_DAYS", 0)
LEASE_MAX_DAYS = env.get_int("LEASE_MAX_DAYS", 0)
LEASE_MAX_EXTENSION_DAYS = env.get_int("LEASE_MAX_EXTENSION_DAYS", 0)
LEASE_MAX_TOTAL_DAYS = env.get_int("LEASE_MAX_TOTAL_DAYS", 0)
LEASE_GRACE_DAYS = env.get_int("LEASE_GRACE_DAYS", 7)
LEASE_DELETE_EXPIRED = env.get_bool("LEASE_DELETE_EXPIRED", False)
LEASE_REMINDER_DAYS = [int(d) for d in env.get_list("LEASE_REMINDER_DAYS", ["3", "1"])]
# Internal snapshots live inside the VM's qcow2 disk (and hold its RAM when taken running): cap them.
SNAPSHOTS_PER_VM = env.get_int("SNAPSHOTS_PER_VM", 5)
RECONCILE_SECONDS = env.get_int("RECONCILE_SECONDS", 10)
# NICs: at most this many per VM; cloud-init user-data given at create is capped (cloud-init's own limit
# is 16 KiB); a hot-unplugged NIC the guest has not released after this long stays until the next stop.
NICS_PER_VM = env.get_int("NICS_PER_VM", 4)
USER_DATA_MAX_BYTES = env.get_int("USER_DATA_MAX_BYTES", 16384)
NIC_DETACH_TIMEOUT_SECONDS = env.get_int("NIC_DETACH_TIMEOUT_SECONDS", 30)
# --- disks hot-plug (issue #11) ---
DISKS_PER_VM = env.get_int("DISKS_PER_VM", 8)  # every disk of a VM (boot disk and data disks; not the cloud-init seed)
DISK_DETACH_TIMEOUT_SECONDS = env.get_int("DISK_DETACH_TIMEOUT_SECONDS", 30)  # how long a guest gets to release a disk
JOB_HEARTBEAT_SECONDS = env.get_int("JOB_HEARTBEAT_SECONDS", 5)
JOB_STALE_SECONDS = env.get_int("JOB_STALE_SECONDS", 60)
# A job whose host is busy with the VM (libvirt's state change lock) runs its handler again, up to
# this many times, waiting DELAY, 2*DELAY, 4*DELAY, ... seconds in between.
JOB_TRANSIENT_RETRIES = env.get_int("JOB_TRANSIENT_RETRIES", 3)
JOB_TRANSIENT_DELAY_SECONDS = env.get_float("JOB_TRANSIENT_DELAY_SECONDS", 2.0)
# External-plugin jobs (portal.jobs.services): a plugin asked to cancel has this long to finish the job as
# cancelled before the portal marks it so; a job whose plugin stopped reporting this long fails.
EXTERNAL_JOB_CANCEL_GRACE_SECONDS = env.get_int("EXTERNAL_JOB_CANCEL_GRACE_SECONDS", 300)
EXTERNAL_JOB_TIMEOUT_SECONDS = env.get_int("EXTERNAL_JOB_TIMEOUT_SECONDS", 24 * 3600)
# Bulk creation (issue #14; env PORTAL_BULK_MAX_COUNT, PORTAL_BULK_PARALLELISM, PORTAL_IDEMPOTENCY_TTL_SECONDS):
# at most this many VMs per request; at most this many children of one batch
# (a parent job) run at once; an idempotency key is remembered this long.
BULK_MAX_COUNT = env.get_int("BULK_MAX_COUNT", 100)
BULK_PARALLELISM = env.get_int("BULK_PARALLELISM", 4)
IDEMPOTENCY_TTL_SECONDS = env.get_int("IDEMPOTENCY_TTL_SECONDS", 24 * 3600)
# Quota for users and groups that have no quota row yet: vms, vcpus, memory MiB, disk GiB.
DEFAULT_QUOTA = {
    "max_vms": env.get_int("DEFAULT_QUOTA_VMS", 3),
    "max_vcpus": env.get_int("DEFAULT_QUOTA_VCPUS", 4),
    "max_memory_mib": env.get_int("DEFAULT_QUOTA_MEMORY_MIB", 2048),
    "max_disk_gib": env.get_int("DEFAULT_QUOTA_DISK_GIB", 40),
    "max_backup_gib": env.get_int("DEFAULT_QUOTA_BACKUP_GIB", 40),  # backups (issue #11)
}
# SSH public keys one user may keep (accounts: put into their VMs by cloud-init).
SSH_KEYS_PER_USER = env.get_int("SSH_KEYS_PER_USER", 20)
# Limits for any single VM, for every door.
VM_LIMITS = {
    "vcpus": (1, env.get_int("MAX_VCPUS", 16)),
    "memory_mib": (64, env.get_int("MAX_MEMORY_MIB", 65536)),
    "disk_gib": (1, env.get_int("MAX_DISK_GIB", 2048)),
}
# Usage reports (issue #14, reports): a running VM is idle when its average CPU stayed below IDLE_CPU_PCT
# percent over the last IDLE_DAYS days, with samples covering at least IDLE_MIN_COVERAGE of that time.
IDLE_CPU_PCT = env.get_float("IDLE_CPU_PCT", 5.0)
IDLE_DAYS = env.get_float("IDLE_DAYS", 3.0)
IDLE_MIN_COVERAGE = env.get_float("IDLE_MIN_COVERAGE", 0.8)
# Stopping idle VMs on the monitor's housekeeping turn (off by default): at most every
# IDLE_AUTO_STOP_EVERY_SECONDS, recorded in the audit as the administrator IDLE_AUTO_STOP_AS (a username).
IDLE_AUTO_STOP = env.get_bool("IDLE_AUTO_STOP", False)
IDLE_AUTO_STOP_AS = env.get_str("IDLE_AUTO_STOP_AS", "")
IDLE_AUTO_STOP_EVERY_SECONDS = env.get_int("IDLE_AUTO_STOP_EVERY_SECONDS", 3600)
# How many rows "top consumers" shows.
REPORT_TOP = env.get_int("REPORT_TOP", 10)

# --- Slack (chatops) ---
SLACK_BOT_TOKEN = env.get("SLACK_BOT_TOKEN")
SLACK_SIGNING_SECRET = env.get("SLACK_SIGNING_SECRET")
SLACK_API_BASE_URL = env.get("SLACK_API_BASE_URL")
SLACK_ADMIN_CHANNEL = env.get("SLACK_ADMIN_CHANNEL")

PORTAL_BASE_URL = env.get_str("BASE_URL", "http://127.0.0.1:8000")

# --- REST API schema: one component name per choice set (vms/api, networks/api) ---
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {
    "VMStatusEnum": "vms.choices.VMStatus",
    "HostStatusEnum": "cluster.choices.HostStatus",
    "JobStatusEnum": "portal.choices.JobStatus",
    "ViaEnum": "portal.choices.Via",
    "NetworkModeEnum": "networks.models.Network.Mode",
    "NicModelEnum": "vms.models.VMNic.Model",
    "NicStatusEnum": "vms.models.VMNic.Status",
    "ImageKindEnum": "storage.models.Image.Kind",
    "ConsoleLinkKindEnum": "consoles.services.CONSOLE_LINK_KINDS",
    "ImageVisibilityEnum": "storage.models.Image.Visibility",
    "UploadStatusEnum": "storage.models.Upload.Status",
}
# Token first: an anonymous API call gets 401 with `WWW-Authenticate: Token` (scripts), not 403.
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "rest_framework.authentication.TokenAuthentication",
    "rest_framework.authentication.SessionAuthentication",
    "portal.jobs.api.authentication.PluginTokenElsewhere",  # a plugin token here: 401 saying where it belongs
]

# --- Slack (chatops), continued: see docs/slack.md ---
# App-level token (xapp-...) for `manage.py slack_socket_mode` (workspaces without a public URL).
SLACK_APP_TOKEN = env.get("SLACK_APP_TOKEN")
# The slash command the app registers (chatops/slack-manifest.yaml).
SLACK_COMMAND = env.get_str("SLACK_COMMAND", "/vm")
# Workspaces allowed to use the bot; empty: only the bot token's own workspace (from auth.test).
SLACK_TEAM_IDS = env.get_list("SLACK_TEAM_IDS", [])
# Lifetime of the one-time `/vm link` URL.
SLACK_LINK_TTL_SECONDS = env.get_int("SLACK_LINK_TTL_SECONDS", 600)
SLACK_CONSOLE_LINK_TTL_SECONDS = env.get_int("SLACK_CONSOLE_LINK_TTL_SECONDS", 300)

# --- Consoles (consoles/, docs/consoles.md) ---
# Seconds a console ticket may wait before the browser connects with it (at most 60).
CONSOLE_TICKET_SECONDS = min(env.get_int("CONSOLE_TICKET_SECONDS", 30), 60)
# How often an open console re-checks that its user may still use it (revoked, stopped, signed out).
CONSOLE_POLL_SECONDS = env.get_int("CONSOLE_POLL_SECONDS", 5)
# Lifetime of a one-time console link (Slack's /vm console, POST /api/vms/{id}/console/, manage.py vm console).
CONSOLE_LINK_TTL_SECONDS = env.get_int("CONSOLE_LINK_TTL_SECONDS", SLACK_CONSOLE_LINK_TTL_SECONDS)
# Longest lifetime of a view-only share link, in hours.
CONSOLE_SHARE_MAX_HOURS = env.get_int("CONSOLE_SHARE_MAX_HOURS", 72)
# ws:// or wss:// base URL of `manage.py console_proxy` (websockify tier); empty: the portal's own origin.
CONSOLE_PROXY_URL = env.get_str("CONSOLE_PROXY_URL", "").rstrip("/")
# Origins allowed to open console websockets besides the portal's own (same host and port as the request).
CONSOLE_ALLOWED_ORIGINS = env.get_list("CONSOLE_ALLOWED_ORIGINS", [PORTAL_BASE_URL, *CSRF_TRUSTED_ORIGINS])
# Open consoles (screens, terminals, shared views) one user may have at once; 0: no cap.
# Over it, the ticket request answers 429 and the websocket closes with 4429.
CONSOLE_MAX_SESSIONS_PER_USER = env.get_int("CONSOLE_MAX_SESSIONS_PER_USER", 8)
# Console tickets and one-time console links one user may ask for, as N/second|minute|hour|day (empty: no
# cap). Counted in Django's cache (per process unless CACHES is shared); over it: HTTP 429 with Retry-After.
CONSOLE_TICKET_RATE = env.get_str("CONSOLE_TICKET_RATE", "30/minute")

# --- Storage domains (storage/domains.py, docs/storage.md; issue #11) ---
# Directories a storage domain's path (a dir pool, a shared mount, a GlusterFS mount point) may be in
# (comma-separated); anything else is refused.
STORAGE_ALLOWED_ROOTS = env.get_list("STORAGE_ALLOWED_ROOTS", [
    STORAGE_DIR, "/var/lib/vmportal", "/var/lib/libvirt/images", "/srv", "/mnt"])
# Where a GlusterFS domain is mounted on its hosts when no path is given: <dir>/<domain name>.
STORAGE_MOUNT_DIR = env.get_str("STORAGE_MOUNT_DIR", "/var/lib/vmportal/mnt")
# The monitor's housekeeping refreshes each pool's capacity and use at most this often.
STORAGE_REFRESH_SECONDS = env.get_int("STORAGE_REFRESH_SECONDS", 300)

# --- Monitoring (monitoring/, docs/monitoring.md; issue #14 part 2) ---
# The collector samples each host every this many seconds, in the monitor's reconcile (the same single
# getAllDomainStats call, with the counters asked for): about the next reconcile after it is due.
METRICS_INTERVAL_SECONDS = env.get_int("METRICS_INTERVAL_SECONDS", 30)
# Two readings further apart than this give no rates (the monitor was down): the later one is a new start.
METRICS_MAX_GAP_SECONDS = env.get_int("METRICS_MAX_GAP_SECONDS", 600)
# How long each resolution is kept (the leader's housekeeping rolls raw into 5-minute and hourly rows).
METRICS_RETENTION_RAW_HOURS = env.get_int("METRICS_RETENTION_RAW_HOURS", 24)
METRICS_RETENTION_5M_DAYS = env.get_int("METRICS_RETENTION_5M_DAYS", 14)
METRICS_RETENTION_1H_DAYS = env.get_int("METRICS_RETENTION_1H_DAYS", 400)

# --- Production hardening and observability (issue #13 parts 4 and 6; docs/deployment.md) ---
# With DEBUG off the portal is served over HTTPS behind nginx: every knob below defaults to the safe value
# then, and to plain HTTP for the demo. `manage.py check --deploy` is clean with deploy/portal.env.example.
SECURE_SSL_REDIRECT = env.get_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env.get_int("HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.get_bool("HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env.get_bool("HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env.get_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Behind trusted proxies the scheme the client used comes from the proxy's X-Forwarded-Proto (nginx sets
# it, overwriting the client's); without one, a client's own header must not make a request "secure".
if env.get_bool("PROXY_SSL_HEADER", TRUSTED_PROXIES > 0):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if not DEBUG:
    # Production: the portal's own URL is explicit (links in Slack and e-mails, console origins), and so
    # are the origins allowed to post forms and open consoles (by default: that URL's origin only).
    PORTAL_BASE_URL = env.require("BASE_URL", "The portal's public URL, e.g. https://portal.example.org. ")
    _origin = "{0.scheme}://{0.netloc}".format(urlparse(PORTAL_BASE_URL))
    CSRF_TRUSTED_ORIGINS = env.get_list("CSRF_TRUSTED_ORIGINS", [_origin])
    CONSOLE_ALLOWED_ORIGINS = env.get_list("CONSOLE_ALLOWED_ORIGINS", [_origin])


def _ws_origin(url: str) -> str:
    """The websocket origin (ws:// or wss://) of an http(s) or ws(s) URL."""
    parsed = urlparse(url)
    return f"{ {'https': 'wss', 'http': 'ws'}.get(parsed.scheme, parsed.scheme)}://{parsed.netloc}"


# Content-Security-Policy (Django's own middleware): scripts only from the portal's static files (no
# inline script; a template that needs one writes <script nonce="{{ csp_nonce }}">); styles may be
# inline because xterm.js writes <style> elements and progress bars set their width; websockets to the
# portal and to the console proxy (PORTAL_CONSOLE_PROXY_URL). PORTAL_CSP_REPORT_ONLY=1 only reports.
from django.utils.csp import CSP  # noqa: E402  (settings read top to bottom; the policy needs the URLs above)

_CSP_POLICY = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF, "data:"],
    "connect-src": list(dict.fromkeys([CSP.SELF, _ws_origin(PORTAL_BASE_URL),
                                       *([_ws_origin(CONSOLE_PROXY_URL)] if CONSOLE_PROXY_URL else [])])),
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}
if env.get_bool("CSP", True):
    if env.get_bool("CSP_REPORT_ONLY", False):
        SECURE_CSP_REPORT_ONLY = _CSP_POLICY
    else:
        SECURE_CSP = _CSP_POLICY

# Web login brute-force protection (django-axes, in the database so every web process counts alike):
# after LOGIN_FAILURE_LIMIT failed logins for one username from one client address, that pair is locked
# out for LOGIN_LOCKOUT_SECONDS (failures older than that are forgotten; a good login resets the count).
# The client address is portal.net's trusted-proxies rule; the API token endpoint keeps its own DRF
# throttle ('token' above) and is not counted here (portal.login_guard).
from datetime import timedelta  # noqa: E402
from typing import Any  # noqa: E402

AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_ENABLED = env.get_bool("LOGIN_LOCKOUT", True)
AXES_FAILURE_LIMIT = env.get_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env.get_int("LOGIN_LOCKOUT_SECONDS", 900))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "portal.net.request_client_ip"
AXES_WHITELIST_CALLABLE = "portal.login_guard.not_counted"
AXES_LOCKOUT_CALLABLE = "portal.login_guard.lockout_response"
AXES_DISABLE_ACCESS_LOG = True  # successful logins are not written to axes' table (the audit has what matters)
AXES_VERBOSE = False

# Logs: PORTAL_LOG_FORMAT=json writes one JSON object per line (python-json-logger); plain otherwise.
# Every record carries the request id, user, VM and job where known (portal.logcontext); the token
# redaction filter stays on every handler's way out.
import pythonjsonlogger.core  # noqa: E402  (its reserved attributes, for the JSON formatter below)

LOG_FORMAT = env.get_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"PORTAL_LOG_FORMAT must be plain or json (got {LOG_FORMAT!r})")
_logging: dict[str, Any] = LOGGING  # the same dict, typed for the changes below
_logging["filters"]["log_context"] = {"()": "portal.logcontext.LogContext"}
_logging["formatters"]["plain"] = {"()": "portal.logcontext.PlainFormatter",
                                  "format": "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"}
_logging["formatters"]["json"] = {
    "()": "pythonjsonlogger.json.JsonFormatter",
    "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
    "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
    # uvicorn adds `color_message` (the message with terminal colour codes) to its records: not a field.
    "reserved_attrs": [*pythonjsonlogger.core.RESERVED_ATTRS, "color_message"],
}
_logging["handlers"]["console"].update(formatter=LOG_FORMAT, filters=[*_REDACT, "log_context"])
_logging["loggers"]["axes"] = {"level": "WARNING"}  # one line per failed login, not three
# A request id from X-Request-ID is taken only from a trusted proxy (PORTAL_TRUSTED_PROXIES > 0).
REQUEST_ID_HEADER = "HTTP_X_REQUEST_ID"
# /readyz: 503 unless the database and the channel layer answer and, by this rule, the enabled hosts are
# up (from the database, as the monitor last saw them): any (one is enough; none enabled counts as
# ready), all, or none (hosts are reported, never make the portal unready).
READY_HOSTS = env.get_str("READY_HOSTS", "any")
if READY_HOSTS not in {"any", "all", "none"}:
    raise ImproperlyConfigured(f"PORTAL_READY_HOSTS must be any, all or none (got {READY_HOSTS!r})")
# The probes answer over plain HTTP on the web tier's own address (load balancers, systemd checks).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# --- end of issue #13 parts 4 and 6 ---

# --- Prometheus metrics (issue #14 part 4; metrics/, README "Prometheus metrics") ---
# /metrics answers only requests that carry `Authorization: Bearer <PORTAL_METRICS_TOKEN>` (or a staff
# user's API token). Unset: the endpoint does not exist (404) -- metrics are never public by accident.
METRICS_TOKEN = env.get_str("METRICS_TOKEN", "").strip()
# Per-VM and per-host gauges come from the collector's latest raw sample; an older one (a stopped VM, a
# host the collector no longer reaches) is not exported.
METRICS_SAMPLE_MAX_AGE_SECONDS = env.get_int("METRICS_SAMPLE_MAX_AGE_SECONDS", 300)

# --- OpenStack clouds (issue #15; clouds/, docs/openstack.md) ---
# Secrets of cloud connections are stored encrypted with this Fernet key; unset, a key derived from
# SECRET_KEY is used (clouds.secrets).
SECRETS_KEY = env.get_str("SECRETS_KEY", "").strip()
# Every call to a cloud's API gives up after this long (image bytes are streamed with their own stall limit).
CLOUDS_API_TIMEOUT_SECONDS = env.get_int("CLOUDS_API_TIMEOUT_SECONDS", 30)
