"""The Glance doors of the back-office: a cloud's Glance images page with its Import form, and the Publish to
Glance action of the Images list (its form, and its refusal of an image whose file is not on this machine)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from portal.models import Job
from storage.models import Image
from tests.clouds.test_glance import cloud, glance, qcow2_bytes, staging  # noqa: F401 (fixtures)


def test_the_glance_page_lists_images_and_imports_one(transactional_db, cloud, glance, admin_client,  # noqa: F811
                                                      test_host, staging, tmp_path):  # noqa: F811
    image = glance("Admin Image", qcow2_bytes(tmp_path), os_distro="alpine")
    changelist = admin_client.get(reverse("admin:clouds_cloud_changelist"))
    page_url = reverse("admin:clouds_cloud_glance", args=[cloud.pk])
    assert page_url in changelist.content.decode()
    page = admin_client.get(page_url)
    text = page.content.decode()
    assert page.status_code == 200 and "Admin Image" in text and image.id in text and "qcow2 / bare" in text
    assert image.hash_value[:17] in text and 'value="Import"' in text

    response = admin_client.post(page_url, {"glance_id": image.id, "name": "admin-image", "storage_domain": "",
                                            "visibility": "private"}, follow=True)
    assert "Import queued" in response.content.decode()
    made = Image.objects.get(name="admin-image")
    assert (made.visibility, made.os_name, made.source) == ("private", "alpine", f"glance:local/{image.id}")
    assert Job.objects.get(kind="image.import").via == "admin"
    again = admin_client.post(page_url, {"glance_id": image.id}, follow=True).content.decode()
    assert "Already imported as image" in again and ">admin-image</a>" in again and "idempotent" in again
    assert Job.objects.filter(kind="image.import").count() == 1
    job = Job.objects.get(kind="image.import")
    # What came from Glance is listed read-only: the Glance image, the portal image and the job.
    imports = admin_client.get(reverse("admin:clouds_glanceimport_changelist")).content.decode()
    assert "Admin Image" in imports and image.id in imports
    assert reverse("admin:storage_image_change", args=[made.pk]) in imports
    assert reverse("admin:portal_job_change", args=[job.pk]) in imports
    assert admin_client.get(reverse("admin:clouds_glanceimport_add")).status_code == 403
    assert reverse("admin:storage_image_change", args=[made.pk]) in admin_client.get(page_url).content.decode()


def test_the_publish_action_asks_then_refuses_a_file_not_on_this_machine(transactional_db, cloud,  # noqa: F811
                                                                          admin_client, test_host):
    image = Image.objects.get(is_default=True)
    url = reverse("admin:storage_image_changelist")
    form = admin_client.post(url, {"action": "publish_to_glance", "_selected_action": [image.pk]})
    text = form.content.decode()
    assert form.status_code == 200 and "Publish to Glance" in text and 'name="cloud"' in text and image.name in text
    done = admin_client.post(url, {"action": "publish_to_glance", "_selected_action": [image.pk], "post": "yes",
                                   "cloud": cloud.pk, "name": "x", "visibility": "private"}, follow=True)
    assert "stored file of image" in done.content.decode() and "is missing" in done.content.decode()
    assert not Job.objects.filter(kind="glance.publish").exists()


@pytest.mark.parametrize("path", ["/admin/clouds/cloud/999999/glance/"])
def test_an_unknown_cloud_goes_back_to_the_list(db, admin_client, path):
    response = admin_client.get(path, follow=True)
    assert "No such cloud" in response.content.decode()
