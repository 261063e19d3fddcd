"""Access-log redaction: one-time tokens in request paths and query strings never reach a log line.

Console tickets (`?ticket=`), console share links (`/consoles/share/<token>/`), one-time console
links (`/consoles/link/<token>/`, formerly `/slack/console/<token>/`) and Slack account links
(`/slack/link/<token>/`) grant access by themselves; `RedactTokens` replaces them with `…` in every
record it sees. settings.LOGGING installs it on django.request, django.server, daphne's access log
(`daphne.access`, fed by `LoggedAccessLog` when the portal is served by `python -m portal.serve`),
daphne's runserver (`django.channels.server`) and on the console handler, which every propagated
record (websockify's, `portal.web`'s) passes through.
"""

from __future__ import annotations

import datetime
import logging
import re
from typing import Any

from daphne.access import AccessLogGenerator

REDACTED = "…"

# A path segment right after one of these prefixes is a token.
_PATH_TOKEN = re.compile(r"(/(?:consoles/share|consoles/link|slack/console|slack/link)/)[^/?#\s\"'<>]+")
# So is the value of these query parameters.
_QUERY_TOKEN = re.compile(r"([?&](?:ticket|token)=)[^&#\s\"'<>]+", re.IGNORECASE)

access_log = logging.getLogger("daphne.access")


def redact(text: str) -> str:
    """`text` with every token in a portal path or query string replaced by `…`."""
    return _QUERY_TOKEN.sub(rf"\g<1>{REDACTED}", _PATH_TOKEN.sub(rf"\g<1>{REDACTED}", text))


class RedactTokens(logging.Filter):
    """Rewrite a record's message without its tokens (the record is changed for every later handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logging module's problem, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


class LoggedAccessLog(AccessLogGenerator):
    """daphne's NCSA-style access log, written to the `daphne.access` logger instead of a raw stream."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)

    def write_entry(self, host: str | None, date: datetime.datetime, request: str, status: int | None = None,
                    length: int | None = None, ident: str | None = None, user: str | None = None) -> None:
        access_log.info('%s %s %s [%s] "%s" %s %s', host, ident or "-", user or "-",
                        date.strftime("%d/%b/%Y:%H:%M:%S"), request, status or "-", length or "-")
