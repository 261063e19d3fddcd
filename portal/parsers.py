"""Request body parsers for the REST API (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES).

A module of its own: DRF imports these while it defines APIView, so this must not import
rest_framework.views (portal.api does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, but a body nested too deeply for Python's parser is a 400, not a 500."""

    def parse(self, stream: Any, media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        """Parse like DRF; a RecursionError (e.g. `[[[[…` 5,000 deep) becomes ParseError (`parse_error`)."""
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
