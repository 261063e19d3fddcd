"""Security review (issue #12): a copy that cannot find an image's boot files says so without the
portal server's paths (a VM's owner reads the job error)."""

from __future__ import annotations

import pytest

from portal.exceptions import Conflict, user_message
from storage.copies import _file_size
from storage.models import Image


def test_a_missing_kernel_is_reported_without_its_path():
    image = Image(name="tiny")
    with pytest.raises(Conflict) as caught:
        _file_size(image, "/srv/vmportal/secret-dir/vmlinuz", "kernel")
    assert "secret-dir" not in user_message(caught.value)
    assert "tiny" in user_message(caught.value)
    assert "/srv/vmportal/secret-dir/vmlinuz" in caught.value.detail
