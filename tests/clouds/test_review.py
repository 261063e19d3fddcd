"""Found while trying issue #15 end to end as an administrator: a cloud without Keystone refuses a service it has
no endpoint for (openstacksdk would send the call to the other service's URL); the cloud's pages link to each
other; "Show differences" says what it found; long check messages do not push the links off the list."""

from __future__ import annotations

import uuid

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from clouds import glance, neutron
from clouds.models import Cloud, NeutronLink
from clouds.services import cloud_create
from portal.exceptions import ValidationFailed
from tests.clouds.test_connections import closed_port
from tests.clouds.test_neutron import cloud, lab_subnet, os_net  # noqa: F401

pytestmark = pytest.mark.django_db


def glance_only(admin_user) -> Cloud:
    return cloud_create(actor=admin_user, via="cli", name="glance-only", auth_type="none",
                        image_endpoint=f"http://127.0.0.1:{closed_port()}")


def test_without_keystone_a_service_without_its_endpoint_is_refused_clearly(admin_user, client_for):
    only_glance = glance_only(admin_user)
    only_neutron = cloud_create(actor=admin_user, via="cli", name="neutron-only", auth_type="none",
                                network_endpoint=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ValidationFailed, match="The cloud glance-only has no Neutron endpoint: without Keystone, "
                                               "give Neutron's URL"):
        neutron.neutron_networks(actor=admin_user, cloud=only_glance)
    with pytest.raises(ValidationFailed, match="The cloud neutron-only has no Glance endpoint"):
        glance.glance_images(actor=admin_user, cloud=only_neutron)
    api = client_for(admin_user)
    answer = api.get("/api/clouds/glance-only/neutron/networks/")
    assert answer.status_code == 400 and "has no Neutron endpoint" in answer.json()["detail"]
    assert answer.json()["errors"] == {"network_endpoint": [answer.json()["detail"]]}
    answer = api.post(f"/api/clouds/neutron-only/glance/images/{uuid.uuid4()}/import/", {}, format="json")
    assert answer.status_code == 400 and "has no Glance endpoint" in answer.json()["detail"]
    with pytest.raises(CommandError, match="has no Neutron endpoint") as refused:
        call_command("neutron", "--user", admin_user.username, "networks", "glance-only")
    assert refused.value.returncode == 2


def test_the_cloud_pages_link_to_each_other(admin_user):
    the_cloud = glance_only(admin_user)
    Cloud.objects.filter(pk=the_cloud.pk).update(last_check_ok=False, last_check_message="Glance: " + "x" * 300)
    web = Client()
    web.force_login(admin_user)
    glance_url, neutron_url = f"/admin/clouds/cloud/{the_cloud.pk}/glance/", f"/admin/clouds/neutronlink/cloud/{the_cloud.pk}/"
    change = web.get(f"/admin/clouds/cloud/{the_cloud.pk}/change/").content.decode()
    assert f'href="{glance_url}"' in change and f'href="{neutron_url}"' in change
    listing = web.get("/admin/clouds/cloud/").content.decode()
    assert f'href="{glance_url}"' in listing and f'href="{neutron_url}"' in listing
    # the message shortened, whole on hover; the links come before it
    assert f'<span title="Glance: {"x" * 300}">Glance: {"x" * 61}…</span>' in listing
    assert listing.index(neutron_url) < listing.index(">Glance: xxx")
    page = web.get(neutron_url)
    html = page.content.decode()
    assert page.status_code == 200 and "has no Neutron endpoint" in html
    assert '<ol class="breadcrumbs">' in html and f'href="/admin/clouds/cloud/{the_cloud.pk}/change/"' in html
    assert "Networks mirrored from Neutron" in html and "Network mirrored from Neutrons" not in html


def test_show_differences_says_what_it_found(admin_user, test_host, cloud, os_net):  # noqa: F811
    conn, make = os_net
    net, (v4,) = make(f"rev-{uuid.uuid4().hex[:6]}", lab_subnet("10.186.0"))
    neutron.neutron_import(actor=admin_user, via="cli", cloud=cloud, neutron_network_id=net.id, mode="isolated",
                           hosts=[test_host])
    conn.network.update_subnet(v4, dns_nameservers=["203.0.113.9"])
    web = Client()
    web.force_login(admin_user)
    answer = web.post(f"/admin/clouds/neutronlink/cloud/{cloud.pk}/", {"do": "diff"}, follow=True)
    assert ("Compared with Neutron: 0 in sync, 1 differing, 0 deleted in Neutron (nothing was changed)."
            in [m.message for m in answer.context["messages"]])
    assert NeutronLink.objects.get().state == NeutronLink.State.DIFFERS
