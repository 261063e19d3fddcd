"""Host admin pages live in the cluster app; their templates follow the app label."""

from __future__ import annotations

import pytest
from django.urls import reverse

from cluster.models import ForeignDomain

pytestmark = pytest.mark.django_db


def test_a_foreign_domain_page_says_it_is_never_touched(admin_client, test_host):
    """The note comes from cluster/templates/admin/cluster/foreigndomain/change_form.html."""
    domain = ForeignDomain.objects.create(host=test_host, uuid="6695eb01-f6a4-8304-79aa-97f2502e193f",
                                          name="someone-elses", state="running")
    html = admin_client.get(reverse("admin:cluster_foreigndomain_change", args=[domain.pk])).content.decode()
    assert "someone-elses" in html
    assert "never touched" in html and 'class="pnote"' in html


def test_the_host_list_api_counts_vms_with_one_aggregate_not_one_per_host(admin_user, test_host,
                                                                         django_assert_max_num_queries):
    """vm_count comes from one placement aggregate shared by the whole response."""
    from rest_framework.test import APIClient

    from cluster.models import Host

    for i in range(5):
        Host.objects.create(name=f"h{i}", uri=f"test:///h{i}")
    api = APIClient()
    api.force_authenticate(admin_user)
    with django_assert_max_num_queries(4):  # page count, hosts, the one VM aggregate (+ a savepoint)
        body = api.get("/api/hosts/").json()
    assert body["count"] == 6 and all(row["vm_count"] == 0 for row in body["results"])
