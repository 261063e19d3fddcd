"""Deploy check (`manage.py check --deploy`): a metrics token short enough to guess (issue #14)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register

MIN_TOKEN_LENGTH = 32


@register(Tags.security, deploy=True)
def metrics_token_check(app_configs: object, **kwargs: object) -> list[Warning]:
    """PORTAL_METRICS_TOKEN guards /metrics (VM names, owners, hosts and loads): a short one can be guessed."""
    token = str(settings.METRICS_TOKEN)
    if not token or len(token) >= MIN_TOKEN_LENGTH:
        return []
    return [Warning(
        f"PORTAL_METRICS_TOKEN has {len(token)} characters: /metrics is guarded by a guessable secret.",
        hint="Generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'.",
        id="metrics.W001")]
