"""Browser tests write screenshots where git does not see them, unless asked to refresh the docs.

(Not a browser test: it checks the helper that picks the directory.)
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from tests.support import screenshot_dir

BASE = Path(settings.BASE_DIR)


def test_a_test_run_writes_screenshots_into_the_ignored_var_directory():
    for environ in ({}, {"PORTAL_SCREENSHOTS": ""}, {"PORTAL_SCREENSHOTS": "0"}, {"PORTAL_SCREENSHOTS": "no"}):
        assert screenshot_dir(environ) == BASE / "var" / "screenshots"
    assert "var/" in (BASE / ".gitignore").read_text().splitlines()


def test_make_screenshots_writes_into_the_docs():
    assert screenshot_dir({"PORTAL_SCREENSHOTS": "1"}) == BASE / "docs" / "screenshots"
    assert "PORTAL_SCREENSHOTS=1" in (BASE / "Makefile").read_text()
