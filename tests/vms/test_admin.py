"""The admin back-office: every page renders, and every change goes through the services into libvirt.

Runs on libvirt's test:///default driver (`test_host`); jobs run on commit, so tests that act on
VMs use `transactional_db`.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.messages import constants as levels
from django.urls import reverse

from portal.choices import JobStatus, Via
from portal.hypervisor import PowerState, get_driver
from portal.models import AuditEvent, Job
from quotas.models import Quota

TEST_URI = "test:///default"


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


def _vm(owner, name, **size):
    from vms.models import VM
    from vms.services import vm_create

    size = size or {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}
    result = vm_create(actor=owner, via=Via.WEB, name=name, **size)
    return VM.objects.get(pk=result.vm.pk)


def _messages(response) -> list[tuple[int, str]]:
    return [(m.level, str(m.message)) for m in response.context["messages"]]


def _texts(response) -> str:
    return " | ".join(text for _level, text in _messages(response))


def _action(client, model: str, action: str, pks, **extra):
    url = reverse(f"admin:{model}_changelist")
    data = {"action": action, "_selected_action": [str(pk) for pk in pks], **extra}
    return client.post(url, data, follow=True)


def _domain_state(vm) -> PowerState:
    return get_driver(TEST_URI).domain_info(str(vm.uuid)).state


def _volume_names() -> set[str]:
    from django.conf import settings

    return {v.name for v in get_driver(TEST_URI).list_volumes(pool=settings.STORAGE_POOL)}


# --- every page renders ---------------------------------------------------------------------------

def test_every_admin_changelist_change_and_add_page_renders_for_a_superuser(
        transactional_db, test_host, alice, admin_user, staff_client):
    from django.contrib.auth.models import Group

    from cluster.services import host_sync
    from portal.plugins import plugin_token_create
    from quotas.services import quota_get_or_create, quota_request_create
    from vms.models import AffinityGroup, DevicePropertyRule, Flavor, LeasePolicy

    vm = _vm(alice, "web-1")
    team = Group.objects.create(name="team-a")
    quota_get_or_create(group=team)
    LeasePolicy.objects.create(group=team, max_days=30)  # VM leases (issue #14): the lease policy admin
    plugin_token_create(actor=admin_user, via=Via.CLI, name="backup-agent", all_targets=True)  # plugin tokens admin
    Flavor.objects.create(name="small", vcpus=1, memory_mib=512, disk_gib=5)
    AffinityGroup.objects.create(name="apart").vms.add(vm)  # the scheduler's affinity group admin
    # A device property rule (a transactional test starts without the rows the migration seeds).
    DevicePropertyRule.objects.get_or_create(device="disk", name="cache")
    host_sync(host=test_host)  # lists libvirt's own "test" domain as foreign
    quota_request_create(actor=alice, via=Via.WEB, max_vms=5, reason="more room")
    assert vm.status == "running"

    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        if opts.app_label not in {"vms", "storage", "portal", "auth"}:
            continue  # other apps' admins are tested with their apps
        name = f"admin:{opts.app_label}_{opts.model_name}"
        response = staff_client.get(reverse(f"{name}_changelist"))
        assert response.status_code == 200, f"{opts.label} changelist: {response.status_code}"
        obj = model._default_manager.order_by("pk").first()
        assert obj is not None, f"no {opts.label} row to open"
        response = staff_client.get(reverse(f"{name}_change", args=[obj.pk]))
        assert response.status_code == 200, f"{opts.label} change page: {response.status_code}"
        can_add = model_admin.has_add_permission(response.wsgi_request)
        response = staff_client.get(reverse(f"{name}_add"))
        assert response.status_code == (200 if can_add else 403), f"{opts.label} add page"


def test_vm_list_answers_who_where_and_what_state(transactional_db, test_host, alice, staff_client):
    vm = _vm(alice, "web-1")
    response = staff_client.get(reverse("admin:vms_vm_changelist"), {"q": "alice"})
    html = response.content.decode()
    assert "web-1" in html
    assert reverse("admin:auth_user_change", args=[alice.pk]) in html  # owner link
    assert reverse("admin:cluster_host_change", args=[test_host.pk]) in html  # host link
    assert 'class="pbadge pbadge-ok"' in html and ">Running<" in html  # badge with a text label
    assert "1 / 128 MiB / 1 GiB" in html
    # search by uuid and by domain name find it too
    for query in (str(vm.uuid), vm.domain_name):
        assert "web-1" in staff_client.get(reverse("admin:vms_vm_changelist"), {"q": query}).content.decode()


def test_vm_change_page_shows_disks_and_jobs_read_only(transactional_db, test_host, alice, staff_client):
    vm = _vm(alice, "web-1")
    response = staff_client.get(reverse("admin:vms_vm_change", args=[vm.pk]))
    html = response.content.decode()
    volume = vm.volumes.get()
    assert volume.name in html  # the disks inline
    assert "vm.create" in html and reverse("admin:portal_job_change", args=[vm_jobs_first(vm).pk]) in html
    form = response.context["adminform"].form
    # everything else is read-only, but for the administrators' scheduling settings (vm_scheduling_update)
    assert set(form.fields) == {"name", "description", "highly_available", "ha_priority", "pinned_hosts",
                                "required_tags"}


def vm_jobs_first(vm):
    from vms.selectors import vm_jobs

    return vm_jobs(vm=vm).first()


def test_admin_creates_a_vm_for_a_user_through_the_service(transactional_db, test_host, alice, admin_user,
                                                           staff_client):
    from vms.models import VM

    add = reverse("admin:vms_vm_add")
    assert "Create a VM for a user" in staff_client.get(add).content.decode()
    form = {"owner": alice.pk, "name": "for-alice", "vcpus": "1", "memory_mib": "128", "disk_gib": "1",
            "description": "made by an admin", "start": "on"}
    response = staff_client.post(add, form)
    vm = VM.objects.get(name="for-alice")
    assert response.status_code == 302 and response["Location"] == reverse("admin:vms_vm_change", args=[vm.pk])
    assert vm.owner == alice and vm.status == "running" and vm.created_via == "admin"
    assert _domain_state(vm) == PowerState.RUNNING
    requested = AuditEvent.objects.get(action="vm.create", target_id=str(vm.pk))
    assert requested.actor == admin_user and "for alice" in requested.message

    # Mistakes come back next to their fields, with what was typed; nothing is created.
    again = staff_client.post(add, {**form, "name": "Bad_Name"})
    assert again.status_code == 400
    html = again.content.decode()
    assert "Invalid name &#x27;Bad_Name&#x27;" in html and 'value="Bad_Name"' in html
    taken = staff_client.post(add, form)
    assert "alice already has a VM named &#x27;for-alice&#x27;." in taken.content.decode()
    over = staff_client.post(add, {**form, "name": "too-big", "vcpus": "16"})
    assert over.status_code == 400 and "Quota exceeded for vCPUs" in over.content.decode()
    assert VM.objects.filter(owner=alice).count() == 1
    assert "Create a VM in the portal" in staff_client.get(reverse("admin:vms_vm_changelist")).content.decode()


# --- VM actions go through the services ------------------------------------------------------------

def test_vm_power_actions_call_the_services_and_change_the_domain_in_libvirt(
        transactional_db, test_host, alice, admin_user, staff_client):
    vm = _vm(alice, "web-1")
    assert _domain_state(vm) == PowerState.RUNNING

    response = _action(staff_client, "vms_vm", "stop", [vm.pk])
    assert (levels.SUCCESS, f"Stopping web-1. Done ({_job_anchor(vm, 'vm.stop')}).") in _messages(response)
    vm.refresh_from_db()
    assert vm.status == "stopped" and _domain_state(vm) == PowerState.SHUTOFF

    response = _action(staff_client, "vms_vm", "stop", [vm.pk])
    assert (levels.WARNING, "web-1: Cannot stop web-1: it is already stopped.") in _messages(response)

    response = _action(staff_client, "vms_vm", "start", [vm.pk])
    assert "Starting web-1. Done" in _texts(response)
    assert _domain_state(vm) == PowerState.RUNNING

    response = _action(staff_client, "vms_vm", "reboot", [vm.pk])
    assert "Rebooting web-1. Done" in _texts(response)

    response = _action(staff_client, "vms_vm", "force_off", [vm.pk])
    assert "Forcing off web-1. Done" in _texts(response)
    vm.refresh_from_db()
    assert vm.status == "stopped" and _domain_state(vm) == PowerState.SHUTOFF

    actions = list(AuditEvent.objects.filter(target_type="vm", target_id=str(vm.pk), via=Via.ADMIN,
                                             actor=admin_user).values_list("action", flat=True))
    for action in ("vm.stop", "vm.start", "vm.reboot", "vm.force_off"):
        assert action in actions
    assert set(Job.objects.filter(via=Via.ADMIN).values_list("status", flat=True)) == {JobStatus.SUCCEEDED}


def _job_anchor(vm, kind: str) -> str:
    job = Job.objects.filter(target_type="vm", target_id=str(vm.pk), kind=kind).first()
    return f'<a href="{reverse("admin:portal_job_change", args=[job.pk])}">job</a>'


def test_vm_action_reports_each_vm_separately(transactional_db, test_host, alice, staff_client):
    running = _vm(alice, "web-1")
    stopped = _vm(alice, "web-2")
    _action(staff_client, "vms_vm", "stop", [stopped.pk])

    response = _action(staff_client, "vms_vm", "reboot", [running.pk, stopped.pk])
    msgs = _messages(response)
    assert any(lvl == levels.SUCCESS and text.startswith("Rebooting web-1.") for lvl, text in msgs)
    assert (levels.WARNING, "web-2: Cannot reboot web-2: it is stopped: start it instead.") in msgs


def test_vm_action_from_the_change_form(transactional_db, test_host, alice, staff_client):
    vm = _vm(alice, "web-1")
    url = reverse("admin:vms_vm_change", args=[vm.pk])
    response = staff_client.post(url, {"CHANGE_FORM-action": "force_off", "_selected_action": str(vm.pk)},
                                 follow=True)
    # The change form runs in one transaction: the job is queued on commit, and has run by now.
    assert "Forcing off web-1." in _texts(response)
    assert _domain_state(vm) == PowerState.SHUTOFF


def test_renaming_a_vm_goes_through_vm_update_and_reaches_libvirt(
        transactional_db, test_host, alice, admin_user, staff_client):
    vm = _vm(alice, "web-1")
    _vm(alice, "web-2")
    url = reverse("admin:vms_vm_change", args=[vm.pk])
    form = _post_data(staff_client.get(url))  # includes the (read-only) disks inline's management form

    response = staff_client.post(url, {**form, "name": "Bad Name"})
    assert response.status_code == 200
    assert "Invalid name" in str(response.context["adminform"].form.errors["name"])

    response = staff_client.post(url, {**form, "name": "web-2"}, follow=True)
    assert (levels.ERROR, "Not saved: You already have a VM named 'web-2'.") in _messages(response)
    vm.refresh_from_db()
    assert vm.name == "web-1"

    response = staff_client.post(url, {**form, "name": "api-1", "description": "the API server"}, follow=True)
    assert "was changed successfully" in _texts(response)
    vm.refresh_from_db()
    assert (vm.name, vm.description) == ("api-1", "the API server")
    assert get_driver(TEST_URI).domain_info(str(vm.uuid)).title == "api-1"
    event = AuditEvent.objects.get(action="vm.update", target_id=str(vm.pk))
    assert (event.via, event.actor) == (Via.ADMIN, admin_user)


# --- deletes go through vm_delete --------------------------------------------------------------------

def test_admin_single_delete_removes_the_domain_and_its_disks_in_libvirt(
        transactional_db, test_host, alice, staff_client):
    from storage.models import Volume

    vm = _vm(alice, "web-1")
    disk = vm.volumes.get().name
    assert disk in _volume_names()
    url = reverse("admin:vms_vm_delete", args=[vm.pk])

    confirm = staff_client.get(url)
    assert confirm.status_code == 200 and disk in confirm.content.decode()  # the disk is named

    response = staff_client.post(url, {"post": "yes"}, follow=True)
    assert "Deleting web-1." in _texts(response)  # queued on commit of the delete view
    vm.refresh_from_db()
    assert vm.status == "deleted" and vm.deleted_at is not None
    assert not get_driver(TEST_URI).domain_exists(str(vm.uuid))
    assert disk not in _volume_names()
    assert not Volume.objects.filter(attachments__vm=vm).exists() and not vm.disks.exists()
    assert AuditEvent.objects.filter(action="vm.deleted", target_id=str(vm.pk)).exists()


def test_admin_bulk_delete_confirms_then_deletes_each_vm_through_the_service(
        transactional_db, test_host, alice, bob, staff_client):
    vms = [_vm(alice, "web-1"), _vm(bob, "db-1")]
    disks = [vm.volumes.get().name for vm in vms]

    confirm = _action(staff_client, "vms_vm", "delete_selected", [vm.pk for vm in vms])
    html = confirm.content.decode()
    assert "Are you sure" in html and all(d in html for d in disks)
    for vm in vms:
        vm.refresh_from_db()
        assert vm.status == "running"  # nothing happens before the confirmation

    response = _action(staff_client, "vms_vm", "delete_selected", [vm.pk for vm in vms], post="yes")
    text = _texts(response)
    assert "Deleting web-1. Done" in text and "Deleting db-1. Done" in text
    assert "Successfully deleted" not in text  # not Django's row delete
    for vm, disk in zip(vms, disks, strict=True):
        vm.refresh_from_db()
        assert vm.status == "deleted"
        assert not get_driver(TEST_URI).domain_exists(str(vm.uuid))
        assert disk not in _volume_names()


def test_deleted_vms_are_hidden_by_default_and_kept_for_history(transactional_db, test_host, alice,
                                                                 staff_client):
    vm = _vm(alice, "gone-1")
    _action(staff_client, "vms_vm", "delete_selected", [vm.pk], post="yes")
    url = reverse("admin:vms_vm_changelist")
    assert "gone-1" not in staff_client.get(url).content.decode()
    assert "gone-1" in staff_client.get(url, {"lifecycle": "deleted"}).content.decode()
    assert "gone-1" in staff_client.get(url, {"status__exact": "deleted"}).content.decode()
    assert staff_client.get(reverse("admin:vms_vm_delete", args=[vm.pk])).status_code == 403


# --- hosts -----------------------------------------------------------------------------------------

def test_deleting_a_host_with_vms_is_refused_with_a_message(transactional_db, test_host, alice, staff_client):
    from cluster.models import Host

    _vm(alice, "web-1")
    response = staff_client.get(reverse("admin:cluster_host_delete", args=[test_host.pk]), follow=True)
    assert (levels.ERROR, "Cannot delete host testhost: 1 VM(s) still live on it. Delete or move them first.") \
        in _messages(response)
    response = _action(staff_client, "cluster_host", "delete_selected", [test_host.pk], post="yes")
    assert "Cannot delete host testhost" in _texts(response)
    assert Host.objects.filter(pk=test_host.pk).exists()


def test_adding_a_host_goes_through_host_register(db, test_host, admin_user, staff_client):
    from cluster.models import Host

    response = staff_client.post(reverse("admin:cluster_host_add"), {
        "name": "far-away", "uri": "qemu+tcp://127.0.0.1:1/system", "domain_type": "qemu", "enabled": "on",
    }, follow=True)
    host = Host.objects.get(name="far-away")
    assert host.status == "down" and host.last_error  # host_register read its facts (unreachable)
    assert any(lvl == levels.WARNING and text.startswith("Registered far-away, but it is unreachable")
               for lvl, text in _messages(response))
    event = AuditEvent.objects.get(action="host.register", target_id=str(host.pk))
    assert (event.via, event.actor) == (Via.ADMIN, admin_user)


def test_host_actions_refresh_facts_and_reconcile_report_per_host(transactional_db, test_host, staff_client):
    from cluster.models import ForeignDomain

    response = _action(staff_client, "cluster_host", "refresh_facts", [test_host.pk])
    test_host.refresh_from_db()
    assert any(lvl == levels.SUCCESS and text.startswith(f"testhost: up, {test_host.cpus} CPUs, ")
               for lvl, text in _messages(response))

    response = _action(staff_client, "cluster_host", "reconcile_now", [test_host.pk])
    assert "testhost: " in _texts(response) and "foreign domain(s)" in _texts(response)
    assert ForeignDomain.objects.filter(host=test_host, name="test").exists()
    html = staff_client.get(reverse("admin:cluster_foreigndomain_changelist")).content.decode()
    assert "never touched" in html


def test_host_list_shows_vm_count_link_and_facts(transactional_db, test_host, alice, staff_client):
    _vm(alice, "web-1")
    html = staff_client.get(reverse("admin:cluster_host_changelist")).content.decode()
    assert f"{reverse('admin:vms_vm_changelist')}?host__id__exact={test_host.pk}" in html
    assert ">1 VM<" in html and "test:///default" in html and ">Up<" in html


# --- images, quotas --------------------------------------------------------------------------------

def test_deleting_an_image_in_use_is_refused(transactional_db, test_host, alice, staff_client):
    from storage.models import Image

    _vm(alice, "web-1")
    image = Image.objects.get(name="test-blank")
    response = staff_client.get(reverse("admin:storage_image_delete", args=[image.pk]), follow=True)
    assert any(lvl == levels.ERROR and text.startswith("Cannot delete image test-blank: VMs depend on it (web-1)")
               for lvl, text in _messages(response))
    assert Image.objects.filter(pk=image.pk).exists()


def test_images_are_imported_and_deleted_through_the_storage_services(
        transactional_db, test_host, admin_user, staff_client, tmp_path, settings):
    from storage.models import Image

    settings.IMAGE_IMPORT_DIRS = [str(tmp_path)]
    settings.IMAGE_STAGING_DIR = str(tmp_path / "staging")
    source = tmp_path / "extra.img"
    source.write_bytes(b"\0" * 510 + b"\x55\xaa" + b"\0" * 7680)  # a blank raw disk with an MBR
    response = staff_client.post(reverse("admin:storage_image_add"), {
        "host": test_host.pk, "source": str(source), "name": "test-extra", "title": "Extra",
        "format": "raw", "min_disk_gib": 1, "visibility": "public",
    }, follow=True)
    assert "Importing image test-extra" in _texts(response)
    image = Image.objects.get(name="test-extra")
    assert image.volume_name in _volume_names() and image.size_bytes == 8192
    assert (image.format, image.source_format, image.source) == ("qcow2", "raw", str(source))
    assert AuditEvent.objects.get(action="image.import", target_id=str(image.pk)).via == Via.ADMIN

    response = staff_client.post(reverse("admin:storage_image_add"), {
        "source": "/etc/shadow", "name": "test-missing", "title": "Missing", "min_disk_gib": 1})
    assert response.status_code == 400 and "not inside the directories" in response.content.decode()
    assert not Image.objects.filter(name="test-missing").exists()

    response = staff_client.post(reverse("admin:storage_image_delete", args=[image.pk]), {"post": "yes"},
                                 follow=True)
    assert "Deleted image test-extra and its base volume." in _texts(response)
    assert not Image.objects.filter(pk=image.pk).exists()
    assert image.volume_name not in _volume_names()


def test_quota_list_shows_usage_against_limits_and_edits_go_through_quota_set(
        transactional_db, test_host, alice, admin_user, staff_client):
    _vm(alice, "web-1")
    quota = Quota.objects.get(user=alice)
    html = staff_client.get(reverse("admin:quotas_quota_changelist")).content.decode()
    assert "1 / 3" in html and "128 MiB / 2 GiB" in html

    response = staff_client.post(reverse("admin:quotas_quota_change", args=[quota.pk]), {
        "max_vms": 5, "max_vcpus": 4, "max_memory_mib": 2048, "max_disk_gib": 20, "max_backup_gib": 40}, follow=True)
    assert response.status_code == 200
    quota.refresh_from_db()
    assert quota.max_vms == 5
    event = AuditEvent.objects.get(action="quota.update")
    assert (event.via, event.actor, event.message) == (Via.ADMIN, admin_user, "max_vms: 3 → 5")


def test_user_admin_has_a_quota_inline_saved_through_quota_set(db, alice, admin_user, staff_client):
    url = reverse("admin:auth_user_change", args=[alice.pk])
    response = staff_client.get(url)
    assert "personal quota" in response.content.decode().lower()
    data = _post_data(response)
    prefix = next(fs.formset.prefix for fs in response.context["inline_admin_formsets"]
                  if fs.formset.model is Quota)
    data[f"{prefix}-0-max_vcpus"] = "8"
    response = staff_client.post(url, data, follow=True)
    assert response.status_code == 200, response.context["adminform"].form.errors
    assert Quota.objects.get(user=alice).max_vcpus == 8
    assert AuditEvent.objects.get(action="quota.update").via == Via.ADMIN


def _post_data(response) -> dict:
    """The values a browser would submit for the change form on `response`."""
    data = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        forms.append(formset.management_form)
        forms.extend(formset.forms)
    for form in forms:
        for name, field in form.fields.items():
            value = form[name].value()
            if value is None or value is False:
                continue
            key = form.add_prefix(name)
            if hasattr(field.widget, "decompress"):  # e.g. the split date and time of date_joined
                for index, part in enumerate(field.widget.decompress(value)):
                    data[f"{key}_{index}"] = str(part)
            elif isinstance(value, (list, tuple)):
                data[key] = [str(v) for v in value]
            elif value is True:
                data[key] = "on"
            else:
                data[key] = str(value)
    return data


# --- jobs and audit are read-only ------------------------------------------------------------------

def test_audit_and_job_admins_are_read_only(transactional_db, test_host, alice, staff_client, admin_user):
    vm = _vm(alice, "web-1")
    job = Job.objects.filter(target_id=str(vm.pk)).first()
    event = AuditEvent.objects.filter(target_id=str(vm.pk)).first()
    for model, obj in (("portal_job", job), ("portal_auditevent", event)):
        assert staff_client.get(reverse(f"admin:{model}_add")).status_code == 403
        assert staff_client.get(reverse(f"admin:{model}_delete", args=[obj.pk])).status_code == 403
        change = reverse(f"admin:{model}_change", args=[obj.pk])
        page = staff_client.get(change)
        assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
        assert staff_client.post(change, {}).status_code == 403
    for model in (Job, AuditEvent):
        model_admin = admin.site._registry[model]
        request = page.wsgi_request
        assert not model_admin.has_add_permission(request)
        assert not model_admin.has_delete_permission(request)
        # Jobs have one action, Cancel (issue #14: through portal.jobs.services.job_cancel); audit has none.
        assert set(model_admin.get_actions(request)) == ({"cancel_jobs"} if model is Job else set())


def test_job_detail_shows_log_error_and_traceback(db, admin_user, staff_client):
    job = Job.objects.create(kind="vm.start", status=JobStatus.ERRORED, error="boom happened",
                             traceback="Traceback (most recent call last):\n  KeyError: 'x'",
                             log="12:00:00 Starting\n", target_type="vm", target_id="999", target_name="ghost")
    html = staff_client.get(reverse("admin:portal_job_change", args=[job.pk])).content.decode()
    assert "boom happened" in html and "KeyError: &#x27;x&#x27;" in html and "12:00:00 Starting" in html


# --- the dashboard ---------------------------------------------------------------------------------

def test_dashboard_shows_capacity_failing_jobs_drift_and_foreign_domains(
        transactional_db, test_host, alice, staff_client, django_assert_max_num_queries):
    from cluster.services import host_sync

    vm = _vm(alice, "web-1", vcpus=2, memory_mib=512, disk_gib=1)
    drifted = _vm(alice, "lost-1")
    get_driver(TEST_URI).undefine(str(drifted.uuid))  # removed behind the portal's back
    host_sync(host=test_host)
    Job.objects.create(kind="vm.start", status=JobStatus.FAILED, error="no space left", target_type="vm",
                       target_id=str(vm.pk), target_name=vm.name)

    index = staff_client.get(reverse("admin:index")).content.decode()
    assert "/admin/dashboard/" in index

    with django_assert_max_num_queries(15):
        response = staff_client.get("/admin/dashboard/")
    assert response.status_code == 200
    d = response.context["d"]
    assert d.error_vms_count == 1 and d.error_vms[0].name == "lost-1"
    assert d.failed_jobs_count == 1 and d.errored_jobs_count == 0
    assert d.foreign_count >= 1
    capacity = next(c for c in d.hosts if c.host.pk == test_host.pk)
    assert (capacity.vms, capacity.vcpus, capacity.memory_mib) == (2, 3, 640)
    html = response.content.decode()
    assert "lost-1" in html and "no space left" in html and "640 MiB" in html
    assert f"3 / {test_host.cpus}" in html

    jobs = staff_client.get(response.context["failed_jobs_url"])
    assert jobs.status_code == 200 and "no space left" in jobs.content.decode()


def test_dashboard_is_for_staff_only(db, alice, client):
    client.force_login(alice)
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
