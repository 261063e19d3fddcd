"""`/vm create-many` (issue #14) on libvirt's test driver: parsing, the channel message with the parent job,
the thread follow-up when every VM has finished, and refusals in plain words."""

from __future__ import annotations

import pytest

from chatops import commands as c
from portal.models import Job
from vms.models import VM

from .conftest import CHANNEL, reply_of, reply_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice_linked(alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    return alice


def test_parse_create_many():
    cmd = c.parse("create-many lab-{n:02} 20 --image tpl --flavor small --start 5 --partial yes --net none")
    assert cmd == c.CreateMany(pattern="lab-{n:02}", count="20", image="tpl", flavor="small", start_number="5",
                               partial=True, networks=())
    with pytest.raises(c.ParseError, match="create-many PATTERN COUNT"):
        c.parse("create-many lab-{n}")
    with pytest.raises(c.ParseError, match="--partial yes"):
        c.parse("create-many lab-{n} 2 --partial maybe")


def test_create_many_announces_the_parent_job_and_follows_up(slack, alice_linked):
    response = slack.command("create-many lab-{n:02} 3 --flavor small")
    assert response.status_code == 200 and reply_of(response) == {}
    assert sorted(VM.objects.values_list("name", flat=True)) == ["lab-01", "lab-02", "lab-03"]
    parent = Job.objects.get(kind="vm.bulk_create")
    assert parent.via == "slack" and parent.status == "succeeded" and parent.children.count() == 3
    posts = slack.fake.posts(CHANNEL)
    first = posts[0]
    assert first.text.startswith("<@UALICE> is creating 3 VMs: lab-01, lab-02, lab-03")
    assert f"job `{str(parent.pk)[:8]}`" in first.text and f"/jobs/{parent.pk}/" in first.text
    follow = [p for p in posts[1:] if p.body.get("thread_ts") == first.ts]
    assert any("every VM was created" in p.text for p in follow)


def test_create_many_refusals(slack, alice_linked):
    text = reply_text(slack.command("create-many lab-{n} 4 --flavor small"))  # alice may have 3 VMs
    assert "Quota exceeded for VMs: requested 4" in text
    text = reply_text(slack.command("create-many lab 2 --flavor small"))
    assert "needs {n}" in text
    assert not VM.objects.exists()


def test_create_many_with_a_lease(slack, alice_linked):
    """`--lease` is one of create's options, which create-many takes too: it reached the command's fields and
    broke it; now each VM gets the lease."""
    assert c.parse("create-many lab-{n} 2 --lease 3d").lease == "3d"
    response = slack.command("create-many lab-{n} 2 --flavor small --lease 3d")
    assert response.status_code == 200 and reply_of(response) == {}
    vms = list(VM.objects.all())
    assert len(vms) == 2 and all(vm.expires_at is not None for vm in vms)
    assert {(vm.expires_at - vm.created_at).days for vm in vms} == {2}  # 3 days less the seconds in between
