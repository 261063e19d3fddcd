"""Deploy checks (`manage.py check --deploy`) for the portal's own HTTPS knobs (issue #13, part 4)."""

from __future__ import annotations

from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def base_url_scheme_check(app_configs: object, **kwargs: object) -> list[Warning]:
    """PORTAL_BASE_URL on http:// while the portal insists on HTTPS cannot work: the browser drops the
    secure CSRF and session cookies on that URL (sign-in answers "CSRF verification failed"), and the
    origins allowed for forms and consoles are derived from it."""
    if urlparse(settings.PORTAL_BASE_URL).scheme != "http":
        return []
    https_only = [name for name, on in (("PORTAL_SECURE_COOKIES", settings.SESSION_COOKIE_SECURE),
                                        ("PORTAL_SECURE_SSL_REDIRECT", settings.SECURE_SSL_REDIRECT)) if on]
    if not https_only:
        return []
    return [Warning(
        f"PORTAL_BASE_URL is {settings.PORTAL_BASE_URL}, plain HTTP, but {' and '.join(https_only)} "
        f"{'require' if len(https_only) > 1 else 'requires'} HTTPS: sign-in over that URL fails (\"CSRF "
        "verification failed\": the browser does not send secure cookies over HTTP).",
        hint="Use the https:// URL nginx serves; only for a trial on plain HTTP, also set "
             "PORTAL_SECURE_COOKIES=0 and PORTAL_SECURE_SSL_REDIRECT=0 (docs/deployment.md).",
        id="portal.W001")]
