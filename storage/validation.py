"""Names an image and its guest may have: checked the same way by every service that makes or changes one."""

from __future__ import annotations

import re

from portal.exceptions import ValidationFailed

IMAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,58}[a-z0-9]$")
# A login name as useradd takes it (Debian's default NAME_REGEX, without the trailing "$").
LOGIN_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def check_login_user(login_user: str) -> None:
    if login_user and not LOGIN_USER_RE.match(login_user):
        raise ValidationFailed("Login user must be a user name: lowercase letters, digits, '_' or '-', "
                               "starting with a letter or '_', at most 32 characters.", field="login_user")
