"""Test settings: same as base, with a private libvirt instance id and a throw-away data dir."""

import os
import uuid

# The suite asks for DEBUG like the demo does (DEBUG is off unless asked for); its subprocesses inherit it.
os.environ.setdefault("PORTAL_DEBUG", "1")

from .base import *  # noqa: E402, F403

# Every test run marks its domains with its own instance id, so reconcile never touches
# a developer's portal domains on the same libvirtd, and leftovers are easy to find.
INSTANCE_ID = os.environ.get("PORTAL_TEST_INSTANCE_ID") or f"test-{uuid.uuid4().hex[:8]}"
# Subprocesses started by tests (daphne, workers) inherit the same id.
os.environ["PORTAL_TEST_INSTANCE_ID"] = INSTANCE_ID
DOMAIN_PREFIX = "vmptest"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
STOP_TIMEOUT_SECONDS = int(os.environ.get("PORTAL_STOP_TIMEOUT_SECONDS", "30"))
JOB_TRANSIENT_DELAY_SECONDS = 0.01  # retries of a busy host's jobs back off for milliseconds in tests
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Storage domains (issue #11): tests make pools in their temporary directories too.
STORAGE_ALLOWED_ROOTS = [*STORAGE_ALLOWED_ROOTS, __import__("tempfile").gettempdir()]  # noqa: F405
