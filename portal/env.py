"""The one place that reads the environment (PORTAL_* variables, see .env.example)."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


_FALSE = {"0", "false", "no", "off"}


def _load_dotenv() -> None:
    """Read `.env` (yours), `var/demo.env` (written by scripts/setup.sh: the demo asks for DEBUG) and
    `var/fallback.env` (written by set-up when no hypervisor could be started) as KEY=VALUE lines,
    without overriding the real environment. A production start says PORTAL_DEBUG=0 in its real
    environment (deploy/portal.env.example): then only the environment is read."""
    if os.environ.get("PORTAL_DEBUG", "").strip().lower() in _FALSE:
        return
    for path in (BASE_DIR / ".env", BASE_DIR / "var" / "demo.env", BASE_DIR / "var" / "fallback.env"):
        if path.is_file():
            _load_file(path)


def _load_file(path: Path) -> None:
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        os.environ.setdefault(key.strip(), value.strip().strip('"').strip("'"))


_load_dotenv()


def get(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"PORTAL_{name}", default)


def get_str(name: str, default: str) -> str:
    return os.environ.get(f"PORTAL_{name}", default)


def get_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(f"PORTAL_{name}")
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"PORTAL_{name} must be a boolean (got {raw!r})")


def _get_number[N: (int, float)](name: str, default: N, kind: type[N], what: str) -> N:
    raw = os.environ.get(f"PORTAL_{name}")
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"PORTAL_{name} must be {what} (got {raw!r})") from exc


def get_int(name: str, default: int) -> int:
    """PORTAL_<name> as a whole number; `default` when unset."""
    return _get_number(name, default, int, "an integer")


def get_float(name: str, default: float) -> float:
    """PORTAL_<name> as a number (seconds and the like); `default` when unset."""
    return _get_number(name, default, float, "a number")


def get_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(f"PORTAL_{name}")
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def require(name: str, hint: str = "") -> str:
    """PORTAL_<name>, which a production portal (DEBUG off) must be given: a clear start-up error if unset."""
    value = os.environ.get(f"PORTAL_{name}")
    if not value or not value.strip():
        raise ImproperlyConfigured(
            f"PORTAL_{name} must be set: DEBUG is off (production; PORTAL_DEBUG=1 asks for a development "
            f"portal). {hint}See deploy/portal.env.example and docs/deployment.md.")
    return value
