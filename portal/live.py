"""What a page needs to update itself live (static/portal/live.js), assembled from the apps.

The core contributes the job vocabulary; the app that serves the live stream (vms: the websocket
at /ws/updates/ and its JSON fallback) registers the rest in its AppConfig.ready. Any page, from
any app, renders `live_context()` with templates/_live.html.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from portal.choices import JobStatus
from portal.jobs.labels import job_labels

_contributors: list[Callable[[], dict[str, Any]]] = []


def register_live_config(contributor: Callable[[], dict[str, Any]]) -> None:
    """Add a function whose dict is merged into every page's live config."""
    if contributor not in _contributors:
        _contributors.append(contributor)


def live_context() -> dict[str, Any]:
    """Template context for a live page: `live_config` (embedded with json_script) and `action_labels`."""
    config: dict[str, Any] = {
        "jobStatusLabels": dict(JobStatus.choices),
        "jobActive": list(JobStatus.ACTIVE),
        "jobLabels": job_labels(),
    }
    for contributor in _contributors:
        config.update(contributor())
    return {"live_config": config, "action_labels": config.get("actionLabels", {})}
