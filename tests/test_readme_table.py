"""README.md's "What you can do" table, proven cell by cell through the door each cell names.

The table is parsed out of README.md when the tests are collected. Every non-empty cell is a claim
and gets its own test, `test_the_readme_claim_holds[<row>/<door>]`, which runs the check registered
for it in `CHECKS` (row, door and the cell's exact words). `test_the_table_and_the_checks_agree`
fails when the README claims something that has no check, or when a check exists for a cell the
README leaves empty or words differently (the table would be understating, or has changed).

The doors, for real, on libvirt's test driver (`test_host`):
- Web: a signed-in browser (Django's test client with CSRF checks on) that only submits forms it
  finds on the pages, with their hidden fields and CSRF token, and never a disabled button;
- REST API: a token from POST /api/auth/token/, then JSON with `Authorization: Token …`;
- Slack: slash commands and button clicks signed like Slack's, against the fake Slack Web API of
  tests/chatops/conftest.py;
- CLI: `manage.py vm --user …` (call_command), its output and exit status;
- Admin: a superuser in the Django admin, submitting the admin's own forms.
Each check asserts what the person sees (message, JSON body, Slack reply, output) and the outcome: the
VM in the database and in libvirt, the job, the audit row with the door's `via`.

Jobs run when the request's transaction commits (ImmediateBackend), so a request returns after its
job has run; the database is transactional for that. Set-up that is not under test (a VM to act
on) goes through the services with `via=system`.

Limits of libvirt's test driver, said where they matter: it cannot grow disks (those checks assert
the service's refusal, in its words, through the door; real growth is proven on qemu:///system in
tests/vms/test_disk.py), it has no consoles (one-time links are issued and redeemed here, the
streaming is proven in tests/consoles/), it cannot hot-plug NICs (NICs are added to and removed from
a stopped VM, whose definition changes; hot-plug is proven on a namespace host in
tests/networks/test_qemu_networks.py) and its networks hand out no DHCP leases (set-up writes the
address the monitor would have read, and the doors must show it and the `ssh` line). Nor can it change
the media of a running domain's CD-ROM drive (the service refuses: tests/vms/test_cdrom.py), so ISOs are
inserted into and ejected from a stopped VM, whose definition changes; the live change is proven on
qemu:///system in tests/vms/test_iso_qemu.py. Its volumes cannot be read back, so a template's SHA-256
is left blank here (tests/vms/test_templates_qemu.py has it).

Images are imported from small qcow2 files that qemu-img makes (tests/storage/test_imports.py), served
for URL imports by an HTTP server on 127.0.0.1. The library page's upload and URL-import forms are
scripts (tus-js-client): they are driven in Chromium by tests/browser/test_images.py, so the Web cell
claims only what the page does without them.
"""

from __future__ import annotations

import hashlib
import html
import inspect
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from http.server import ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib import admin as django_admin
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import SSHKey
from cluster.models import ForeignDomain
from networks.models import Network
from portal.choices import JobStatus, Via
from portal.hypervisor import DomainSpec, PowerState, domain_xml, get_driver
from portal.jobs import JobContext
from portal.models import AuditEvent, Job
from storage.models import Image
from tests.accounts.conftest import ed25519_line
from tests.chatops import conftest as slack_kit
from tests.chatops.conftest import CHANNEL, reply_of, reply_text
from tests.storage.test_imports import _Handler as ImageHandler
from tests.storage.test_imports import make_source, tus_create, tus_patch
from tests.vms.test_adoption import define_foreign
from tests.vms.test_cdrom import _register_iso as register_iso
from vms import lifecycle
from vms.choices import VMStatus
from vms.models import VM, Snapshot, VMNic

# The Slack kit of tests/chatops/conftest.py (a fake Slack Web API on loopback, requests signed like
# Slack's, linking): its fixtures, under their own names so that pytest finds them in this module (the
# autouse reset of libvirt's test driver included), set through globals() as the checks' parameters
# share their names.
globals().update({name: getattr(slack_kit, name) for name in (
    "fake_slack", "slack_on", "slack", "link", "small_flavor", "_fresh_test_driver")})

pytestmark = pytest.mark.django_db(transaction=True)

README = Path(__file__).resolve().parents[1] / "README.md"
STATIC = README.parent / "static"
TEST_URI = "test:///default"
NAME = "web-1"
SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}


# === the table ====================================================================================

# Row keys (short, for test ids) -> the README's row labels.
ROWS = {
    "lifecycle": "Create / start / stop (ACPI) / force off / reboot / pause / resume / delete",
    "rename": "Rename, describe",
    "grow-disk": "Grow the disk (live while running)",
    "snapshots": "Snapshots (disks + memory): take / list / revert / delete",
    "quota": "Quota usage",
    "jobs": "Jobs with live progress, audit trail",
    "consoles": "Screen (noVNC) and serial terminal (xterm.js) in the browser",
    "networks": "Networks: pick at create, add / remove NICs, addresses and the `ssh` line",
    "keys": "SSH keys for cloud-init",
    "images": "Image library: list / import (upload, URL, host file) / delete",
    "templates": "Templates: make one from a stopped VM, create VMs from it (thin or full)",
    "cdrom": "CD-ROM: insert / eject an ISO",
    "adoption": "Adopt / release a domain made outside the portal",
}
# The README's column headers -> short names for test ids.
DOORS = {"Web": "web", "REST API": "api", "Slack": "slack", "CLI": "cli", "Admin": "admin"}


@dataclass(frozen=True)
class Cell:
    """One non-empty cell of the table: the row's key (its label when unknown), the door, the words."""

    row: str
    door: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.row}/{DOORS.get(self.door, self.door)}"


def _cells_of(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def readme_cells() -> list[Cell]:
    """The non-empty cells of the first table under README.md's "## What you can do"."""
    text = README.read_text(encoding="utf-8")
    heading = "\n## What you can do\n"
    assert heading in text, f"{README} has no '## What you can do' section"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    lines: list[str] = []
    for line in section.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    assert len(lines) > 2, "no table under '## What you can do'"
    header, _separator, *body = (_cells_of(line) for line in lines)
    doors = header[1:]
    labels = {label: key for key, label in ROWS.items()}
    cells = []
    for row in body:
        label, *values = row
        assert len(values) == len(doors), f"row {label!r} has {len(values)} cells for {len(doors)} doors"
        cells += [Cell(labels.get(label, label), door, value)
                  for door, value in zip(doors, values, strict=True) if value]
    return cells


CLAIMS = readme_cells()

Check = Callable[..., None]
CHECKS: dict[tuple[str, str, str], Check] = {}


def claim(row: str, door: str, text: str = "✓") -> Callable[[Check], Check]:
    """Register the decorated function as the proof of the cell (row, door) that reads `text`.

    Its parameters are fixture names (test_host, alice, slack, monkeypatch, …), resolved per test.
    """
    assert row in ROWS and door in DOORS, (row, door)

    def register(check: Check) -> Check:
        assert (row, door, text) not in CHECKS, f"two checks for {row}/{door}"
        CHECKS[(row, door, text)] = check
        return check

    return register


# === shared helpers ===============================================================================

def libvirt():
    return get_driver(TEST_URI)


def make_vm(owner, name: str = NAME, **size) -> VM:
    """Set-up, not under test: a running VM made through the service."""
    from vms.services import vm_create

    result = vm_create(actor=owner, via=Via.SYSTEM, name=name, **(size or SMALL))
    return assert_vm(result.vm, VMStatus.RUNNING, PowerState.RUNNING)


def force_off(vm: VM) -> VM:
    """Set-up, not under test: cut the VM's power through the service."""
    from vms.services import vm_force_off

    vm_force_off(actor=vm.owner, via=Via.SYSTEM, vm=vm)
    return assert_vm(vm, VMStatus.STOPPED, PowerState.SHUTOFF)


def take_snapshot(vm: VM, name: str = "before-upgrade") -> None:
    """Set-up, not under test: a snapshot of the running VM through the service."""
    from vms.services import snapshot_create

    snapshot_create(actor=vm.owner, via=Via.SYSTEM, vm=vm, name=name)
    assert vm.snapshots.get(name=name).status == "ready"


def assert_vm(vm: VM, status: str, power: PowerState | None) -> VM:
    """The VM is `status` in the database and `power` in libvirt (None: its domain is gone)."""
    vm.refresh_from_db()
    assert vm.status == status, f"{vm.name} is {vm.status}, not {status} ({vm.last_error})"
    if power is None:
        assert not libvirt().domain_exists(str(vm.uuid)), f"{vm.name}'s domain is still in libvirt"
    else:
        assert libvirt().domain_info(str(vm.uuid)).state == power
    return vm


def job_of(vm: VM, kind: str, *, via: str) -> Job:
    """The VM's latest job of `kind`: asked through `via`, and succeeded."""
    jobs = Job.objects.filter(target_type="vm", target_id=str(vm.pk), kind=kind)
    job = jobs.order_by("-created_at").first()
    assert job is not None, f"no {kind} job on {vm.name}"
    assert (job.via, job.status) == (via, JobStatus.SUCCEEDED), (job.via, job.status, job.error)
    return job


def audited(vm: VM, action: str, *, via: str) -> AuditEvent:
    """The audit row of `action` on the VM, through `via`."""
    rows = AuditEvent.objects.filter(target_type="vm", target_id=str(vm.pk))
    found = rows.filter(action=action, via=via).first()
    assert found is not None, f"no audit row {action} via {via}: {list(rows.values_list('action', 'via'))}"
    return found


def assert_created(owner, *, via: str, name: str = NAME) -> VM:
    """A VM made through a door: running in libvirt, with its create job and audit rows."""
    vm = VM.objects.get(owner=owner, name=name)
    assert vm.created_via == via
    assert_vm(vm, VMStatus.RUNNING, PowerState.RUNNING)
    job_of(vm, "vm.create", via=via)
    audited(vm, "vm.create", via=via)
    audited(vm, "vm.created", via=via)
    return vm


def assert_deleted(vm: VM, *, via: str) -> None:
    """Deleted through a door: gone from libvirt with its disks, kept in the database as deleted."""
    from django.conf import settings

    disks = list(vm.volumes.values_list("name", flat=True))
    assert_vm(vm, VMStatus.DELETED, None)
    volumes = {v.name for v in libvirt().list_volumes(pool=settings.STORAGE_POOL)}
    assert not volumes & set(disks), f"disks left in libvirt: {volumes & set(disks)}"
    job_of(vm, "vm.delete", via=via)
    audited(vm, "vm.delete", via=via)


# (power action, status, libvirt state) in an order where each step is allowed from the last one's end.
POWER_SEQUENCE = (
    ("stop", VMStatus.STOPPED, PowerState.SHUTOFF),
    ("start", VMStatus.RUNNING, PowerState.RUNNING),
    ("pause", VMStatus.PAUSED, PowerState.PAUSED),
    ("resume", VMStatus.RUNNING, PowerState.RUNNING),
    ("reboot", VMStatus.RUNNING, PowerState.RUNNING),
    ("force_off", VMStatus.STOPPED, PowerState.SHUTOFF),
)


def prove_power_actions(vm: VM, *, via: str, act: Callable[[str], str]) -> None:
    """Every power action through a door: `act(action)` does it and returns what the door said."""
    assert {action for action, *_ in POWER_SEQUENCE} == set(lifecycle.POWER_ACTIONS)
    for action, status, power in POWER_SEQUENCE:
        said = act(action)
        transition = lifecycle.POWER_ACTIONS[action]
        assert f"{transition.doing} {vm.name}." in said, f"{action}: the door said {said!r}"
        assert_vm(vm, status, power)
        job = job_of(vm, transition.job_kind, via=via)
        if action == "stop":  # "(ACPI)": the guest is asked to power off, not cut off
            assert "Sending the ACPI power-off signal" in job.log
        audited(vm, f"vm.{action}", via=via)
        audited(vm, transition.done, via=via)


def assert_renamed(vm: VM, *, via: str) -> None:
    """Renamed to api-1 and described as "the API server": in the database, in libvirt, in the audit."""
    vm.refresh_from_db()
    assert (vm.name, vm.description) == ("api-1", "the API server")
    assert libvirt().domain_info(str(vm.uuid)).title == "api-1"
    assert "<description>the API server</description>" in libvirt().domain_xml(str(vm.uuid))
    event = audited(vm, "vm.update", via=via)
    assert event.message == "name: 'web-1' → 'api-1'; description: '' → 'the API server'"


# libvirt's test driver cannot grow disks (no blockResize): the service refuses with these words
# before anything changes. Real growth, live and offline, is proven on qemu:///system in
# tests/vms/test_disk.py; here each door must hand its request to vm_grow_disk and show its answer.
GROW_REFUSAL = "The host of web-1 (testhost) cannot grow disks."
GROW_NOOP = "The disk of web-1 is already 1 GiB."


def assert_disk_unchanged(vm: VM) -> None:
    """The refused growth left nothing behind: size, quota and jobs as before."""
    from quotas.selectors import quota_usage

    vm.refresh_from_db()
    assert vm.disk_gib == 1 and vm.status == VMStatus.RUNNING
    disk = next(u for u in quota_usage(user=vm.owner) if u.resource == "disk_gib")
    assert disk.used == 1
    assert not Job.objects.filter(kind="vm.disk.grow").exists()


def assert_snapshot(vm: VM, name: str, *, via: str) -> None:
    """A snapshot taken through a door: ready, with the running VM's memory, in libvirt too."""
    snapshot = vm.snapshots.get(name=name)
    assert (snapshot.status, snapshot.has_memory, snapshot.created_via) == ("ready", True, via)
    assert name in {s.name for s in libvirt().list_snapshots(str(vm.uuid))}
    job_of(vm, "vm.snapshot.create", via=via)
    audited(vm, "vm.snapshot.create", via=via)


def assert_reverted(vm: VM, *, via: str) -> None:
    """Reverted to a snapshot taken while running: the powered-off VM runs again, where it was."""
    assert_vm(vm, VMStatus.RUNNING, PowerState.RUNNING)
    job_of(vm, "vm.snapshot.revert", via=via)
    audited(vm, "vm.snapshot.revert", via=via)


def assert_snapshot_deleted(vm: VM, name: str, *, via: str) -> None:
    assert not vm.snapshots.filter(name=name).exists()
    assert name not in {s.name for s in libvirt().list_snapshots(str(vm.uuid))}
    job_of(vm, "vm.snapshot.delete", via=via)
    audited(vm, "vm.snapshot.delete", via=via)


# The usage of a VM of 2 vCPUs, 512 MiB and 2 GiB on alice's quota (3 VMs, 4 vCPUs, 2 GiB, 20 GiB),
# as every door words it (memory in MiB or GiB, as portal.units.mib writes it).
QUOTA_VM = {"vcpus": 2, "memory_mib": 512, "disk_gib": 2}
QUOTA_USAGE = ("1 / 3", "2 / 4", "512 MiB / 2 GiB", "2 / 20 GiB")


def assert_console_link(user, url: str, vm: VM, kind: str) -> None:
    """A one-time console link: it opens the VM's console page for its user, once."""
    path = urlsplit(url).path
    assert path.startswith("/consoles/link/"), url
    browser = Browser(user)
    opened = browser.client.get(path)
    assert opened.status_code == 302 and opened["Location"] == f"/consoles/vm/{vm.pk}/{kind}/", opened
    page = browser.get(opened["Location"])
    assert f"{'Screen' if kind == 'screen' else 'Terminal'} of {vm.name}" in page.text
    again = browser.client.get(path)
    assert again.status_code == 410
    assert "This console link was already used." in text_of(again.content.decode())


def while_a_job_runs(monkeypatch, look: Callable[[], Any]) -> list[Any]:
    """Have `look()` called inside the next job, right after its first progress step: what a person
    looking through a door at that moment sees. Returns the list `look`'s one result lands in."""
    seen: list[Any] = []
    progress = JobContext.progress

    def progress_then_look(self: JobContext, percent: int, step: str) -> None:
        progress(self, percent, step)
        if not seen:
            seen.append(look())

    monkeypatch.setattr(JobContext, "progress", progress_then_look)
    return seen


# --- Web and Admin: a browser that submits the forms it finds -------------------------------------

def text_of(markup: str) -> str:
    """A page's visible text: tags, scripts and styles out, entities read, whitespace collapsed."""
    markup = re.sub(r"<(script|style|template)\b.*?</\1>", " ", markup, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


@dataclass
class Form:
    """A form as a browser sees it: what it would submit as it stands, and what its choices allow."""

    action: str
    method: str
    id: str
    values: dict[str, list[str]]
    choices: dict[str, set[str]]  # selects, radios and checkboxes: the values that may be sent
    buttons: list[tuple[str, str, bool]]  # submit buttons in page order: name, value, disabled


class _FormParser(HTMLParser):
    def __init__(self, page_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page_url = page_url
        self.forms: list[Form] = []
        self.form: Form | None = None
        self.select: tuple[str, list[tuple[str, bool]]] | None = None
        self.option: list[str] | None = None  # the option being read: [value or None, text]
        self.textarea: list[str] | None = None

    def handle_starttag(self, tag: str, attrs_list: list) -> None:
        attrs = {k: (v if v is not None else "") for k, v in attrs_list}
        if tag == "form":
            self.form = Form(action=urljoin(self.page_url, attrs.get("action") or self.page_url),
                             method=attrs.get("method", "get").lower(), id=attrs.get("id", ""),
                             values={}, choices={}, buttons=[])
            self.forms.append(self.form)
            return
        form, name = self.form, attrs.get("name", "")
        if form is None:
            return
        if tag == "input":
            kind = attrs.get("type", "text").lower()
            if kind in ("submit", "image", "button", "reset"):
                if kind == "submit":
                    form.buttons.append((name, attrs.get("value", ""), "disabled" in attrs))
                return
            if not name:
                return
            if kind in ("radio", "checkbox"):
                form.choices.setdefault(name, set()).add(attrs.get("value", "on"))
                form.values.setdefault(name, [])
                if "checked" in attrs:
                    form.values[name].append(attrs.get("value", "on"))
            else:
                form.values.setdefault(name, []).append(attrs.get("value", ""))
        elif tag == "button":
            if attrs.get("type", "submit").lower() == "submit":
                form.buttons.append((name, attrs.get("value", ""), "disabled" in attrs))
        elif tag == "select" and name:
            self.select = (name, [])
        elif tag == "option" and self.select is not None:
            self.option = [attrs.get("value"), ""]
            self.select[1].append(("", "selected" in attrs))  # value filled in at </option>
        elif tag == "textarea" and name:
            self.textarea = [name, ""]

    def handle_data(self, data: str) -> None:
        if self.option is not None:
            self.option[1] += data
        if self.textarea is not None:
            self.textarea[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "option" and self.option is not None and self.select is not None:
            value = self.option[0] if self.option[0] is not None else self.option[1].strip()
            self.select[1][-1] = (value, self.select[1][-1][1])
            self.option = None
        elif tag == "select" and self.select is not None and self.form is not None:
            name, options = self.select
            self.form.choices.setdefault(name, set()).update(value for value, _ in options)
            chosen = [value for value, selected in options if selected] or [v for v, _ in options[:1]]
            self.form.values.setdefault(name, []).extend(chosen[:1])
            self.select = None
        elif tag == "textarea" and self.textarea is not None and self.form is not None:
            name, content = self.textarea
            self.form.values.setdefault(name, []).append(content.removeprefix("\n"))
            self.textarea = None
        elif tag == "form":
            self.form = None


@dataclass
class Page:
    url: str
    response: Any

    @property
    def html(self) -> str:
        return self.response.content.decode()

    @property
    def text(self) -> str:
        return text_of(self.html)

    @property
    def forms(self) -> list[Form]:
        parser = _FormParser(self.url)
        parser.feed(self.html)
        return parser.forms


class Browser:
    """A signed-in browser: it GETs pages and submits only the forms on them, as they are offered."""

    def __init__(self, user) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.client.force_login(user)

    def get(self, url: str, **query) -> Page:
        response = self.client.get(url, query)
        assert response.status_code == 200, f"GET {url}: {response.status_code}"
        return Page(url, response)

    def submit(self, page: Page, *, action: str | None = None, form_id: str | None = None,
               button: str | None = None, data: dict[str, str | list[str]] | None = None, expect: int = 200,
               **fields: str | list[str]) -> Page:
        """Fill in the page's one POST form with this `action` (or id), click its submit button (the
        named one, else its first, as Enter does) and follow the redirects, sending the page as Referer.

        Every given field must be one of the form's fields and, for a select, radio or checkbox, one of
        its choices; the button clicked must not be disabled. The final answer's status must be `expect`
        (a form sent back with its errors may say 400).
        """
        wanted = {**fields, **(data or {})}
        forms = [f for f in page.forms if f.method == "post"
                 and (action is None or urlsplit(f.action).path == action)
                 and (form_id is None or f.id == form_id)]
        if len(forms) > 1:  # e.g. a page's own form and the delete dialog's: the one with these fields
            forms = [f for f in forms if set(wanted) <= set(f.values)]
        assert len(forms) == 1, f"{page.url} has {len(forms)} POST forms to {action or form_id}"
        form = forms[0]
        pressed = [b for b in form.buttons if button is None or b[0] == button][:1]
        assert pressed, f"the form to {form.action} has no button {button or ''}"
        [(button_name, button_value, disabled)] = pressed
        assert not disabled, f"{button_name or button_value!r} to {form.action} is disabled on {page.url}"
        values = dict(form.values)
        if button_name:
            values[button_name] = [button_value]
        for name, value in wanted.items():
            assert name in values, f"the form to {form.action} has no {name!r}, only {sorted(values)}"
            value = value if isinstance(value, list) else [value]
            if name in form.choices:
                assert set(value) <= form.choices[name], f"{name}={value} is not one of {form.choices[name]}"
            values[name] = value
        target = urlsplit(form.action).path
        response = self.client.post(target, values, follow=True, HTTP_REFERER=f"http://testserver{page.url}")
        assert response.status_code == expect, f"POST {target}: {response.status_code}"
        final = urlsplit(response.redirect_chain[-1][0]).path if response.redirect_chain else target
        return Page(final, response)


# --- REST API, CLI, Slack ---------------------------------------------------------------------------

def api_client(user) -> APIClient:
    """A script's client: a token from POST /api/auth/token/ (as the README shows), then `Token …`."""
    client = APIClient()
    answer = client.post("/api/auth/token/", {"username": user.username, "password": f"pw-{user.username}"})
    assert answer.status_code == 200, answer.content
    client.credentials(HTTP_AUTHORIZATION=f"Token {answer.json()['token']}")
    return client


def cli(*args: str, user: str = "alice") -> str:
    """`manage.py vm --user alice …`: what it printed (it must succeed)."""
    out = StringIO()
    call_command("vm", "--user", user, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def cli_error(*args: str, user: str = "alice") -> tuple[int, str]:
    """`manage.py vm --user alice …` that fails: its exit status and message."""
    with pytest.raises(CommandError) as failed:
        cli(*args, user=user)
    return failed.value.returncode, str(failed.value)


def slack_run(slack, text: str, **kwargs) -> str:
    """Type `/vm <text>` (as UALICE), click the confirmation when the bot asks first; all the bot said."""
    slack.fake.clear()
    response = slack.command(text, **kwargs)
    said = [reply_text(response)]
    confirm = next((elements[0] for block in reply_of(response).get("blocks") or []
                    if block.get("type") == "actions" and (elements := block["elements"])
                    and elements[-1]["action_id"] == "vm_cancel"), None)
    if confirm is not None:
        slack.click(confirm["action_id"], confirm["value"], ephemeral=True)
    said += [call.text for call in slack.fake.said()]
    return "\n".join(said)


def linked_alice(alice, link) -> Any:
    link(alice, "UALICE")
    return alice


# === Create / start / stop (ACPI) / force off / reboot / pause / resume / delete ===================

@claim("lifecycle", "Web")
def web_lifecycle(test_host, alice) -> None:
    browser = Browser(alice)
    page = browser.submit(browser.get("/vms/new/"), action="/vms/new/", name=NAME, flavor="custom", **{
        k: str(v) for k, v in SMALL.items()})
    assert "Creating web-1." in page.text
    vm = assert_created(alice, via=Via.WEB)
    detail = f"/vms/{vm.pk}/"
    assert page.url == detail

    def act(action: str) -> str:
        return browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/action/{action}/").text

    prove_power_actions(vm, via=Via.WEB, act=act)
    page = browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/delete/", confirm_name=NAME)
    assert "Deleting web-1." in page.text and page.url == "/"
    assert_deleted(vm, via=Via.WEB)


@claim("lifecycle", "REST API")
def api_lifecycle(test_host, alice) -> None:
    api = api_client(alice)
    created = api.post("/api/vms/", {"name": NAME, **SMALL}, format="json")
    assert created.status_code == 202 and created.json()["message"] == "Creating web-1.", created.content
    vm = assert_created(alice, via=Via.API)

    def act(action: str) -> str:
        answer = api.post(f"/api/vms/{vm.pk}/actions/", {"action": action}, format="json")
        assert answer.status_code == 202, answer.content
        return answer.json()["message"]

    prove_power_actions(vm, via=Via.API, act=act)
    deleted = api.delete(f"/api/vms/{vm.pk}/")
    assert deleted.status_code == 202 and deleted.json()["message"] == "Deleting web-1."
    assert_deleted(vm, via=Via.API)


# How the bot tells the end of each job in Slack (in the thread, or privately after a confirmation).
SLACK_DONE = {
    "stop": "⏹️ *web-1* stopped.", "start": "▶️ *web-1* is running.", "pause": "⏸️ *web-1* is paused.",
    "resume": "▶️ *web-1* is running again.", "reboot": "🔄 *web-1* rebooted.",
    "force_off": "⏹️ *web-1* was forced off.", "delete": "🗑️ *web-1* was deleted with its disks.",
}


@claim("lifecycle", "Slack")
def slack_lifecycle(test_host, alice, link, slack, small_flavor) -> None:
    linked_alice(alice, link)
    said = slack_run(slack, "create web-1 --flavor small")
    assert "<@UALICE> is creating *web-1*" in said and "✅ *web-1* is running." in said
    vm = assert_created(alice, via=Via.SLACK)
    assert audited(vm, "vm.create", via=Via.SLACK).data["slack_user"] == "UALICE"

    def act(action: str) -> str:
        said = slack_run(slack, f"{action.replace('_', '-')} web-1")
        assert SLACK_DONE[action] in said, said
        return said

    prove_power_actions(vm, via=Via.SLACK, act=act)
    said = slack_run(slack, "delete web-1")
    assert "Deleting web-1." in said and SLACK_DONE["delete"] in said
    assert_deleted(vm, via=Via.SLACK)


@claim("lifecycle", "CLI")
def cli_lifecycle(test_host, alice) -> None:
    out = cli("create", NAME, "--vcpus", "1", "--memory-mib", "128", "--disk-gib", "1", "--wait")
    assert "Creating web-1." in out and "succeeded 100% Done" in out
    vm = assert_created(alice, via=Via.CLI)

    def act(action: str) -> str:
        out = cli("--wait", action.replace("_", "-"), NAME)
        assert "succeeded 100% Done" in out, out
        return out

    prove_power_actions(vm, via=Via.CLI, act=act)
    out = cli("--wait", "delete", NAME)
    assert "Deleting web-1." in out and "succeeded 100% Done" in out
    assert_deleted(vm, via=Via.CLI)


@claim("lifecycle", "Admin")
def admin_lifecycle(test_host, alice, admin_user) -> None:
    admin = Browser(admin_user)
    add = "/admin/vms/vm/add/"
    page = admin.submit(admin.get(add), action=add, owner=str(alice.pk), name=NAME,
                        **{k: str(v) for k, v in SMALL.items()})
    assert "Creating web-1. Done" in page.text
    vm = assert_created(alice, via=Via.ADMIN)
    assert page.url == f"/admin/vms/vm/{vm.pk}/change/"
    changelist = "/admin/vms/vm/"

    def act(action: str) -> str:
        page = admin.submit(admin.get(changelist), action=changelist,
                            data={"action": action, "_selected_action": str(vm.pk)})
        assert f"{lifecycle.POWER_ACTIONS[action].doing} web-1. Done" in page.text, page.text
        return page.text

    prove_power_actions(vm, via=Via.ADMIN, act=act)
    confirm = admin.submit(admin.get(changelist), action=changelist,
                           data={"action": "delete_selected", "_selected_action": str(vm.pk)})
    assert "Are you sure" in confirm.text and vm.volumes.get().name in confirm.text
    page = admin.submit(confirm, action=changelist)  # "Yes, I'm sure"
    assert "Deleting web-1. Done" in page.text
    assert_deleted(vm, via=Via.ADMIN)


# === Rename, describe ===============================================================================

@claim("rename", "Web")
def web_rename(test_host, alice) -> None:
    vm = make_vm(alice)
    browser = Browser(alice)
    page = browser.submit(browser.get(f"/vms/{vm.pk}/"), action=f"/vms/{vm.pk}/edit/", name="api-1",
                          description="the API server")
    assert "Saved the settings of api-1." in page.text and "the API server" in page.text
    assert_renamed(vm, via=Via.WEB)


@claim("rename", "REST API")
def api_rename(test_host, alice) -> None:
    vm = make_vm(alice)
    answer = api_client(alice).patch(f"/api/vms/{vm.pk}/", {"name": "api-1", "description": "the API server"},
                                     format="json")
    assert answer.status_code == 200, answer.content
    assert (answer.json()["name"], answer.json()["description"]) == ("api-1", "the API server")
    assert_renamed(vm, via=Via.API)


@claim("rename", "Admin")
def admin_rename(test_host, alice, admin_user) -> None:
    vm = make_vm(alice)
    admin = Browser(admin_user)
    change = f"/admin/vms/vm/{vm.pk}/change/"
    page = admin.submit(admin.get(change), action=change, button="_save", name="api-1",
                        description="the API server")
    assert "was changed successfully" in page.text
    assert_renamed(vm, via=Via.ADMIN)


# === Grow the disk (live while running) =============================================================
# Each check asks a running VM's disk to grow (the live case) and gets the service's refusal on the
# test driver, in the service's words, with nothing changed; then asks for the size it already has
# and gets the service's no-op answer: the door handed both requests to vm_grow_disk.

@claim("grow-disk", "Web")
def web_grow_disk(test_host, alice) -> None:
    vm = make_vm(alice)
    browser = Browser(alice)
    detail = f"/vms/{vm.pk}/"
    page = browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/disk/", disk_gib="2")
    assert GROW_REFUSAL in page.text and page.url == detail
    assert_disk_unchanged(vm)
    page = browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/disk/", disk_gib="1")
    assert GROW_NOOP in page.text


@claim("grow-disk", "REST API")
def api_grow_disk(test_host, alice) -> None:
    vm = make_vm(alice)
    api = api_client(alice)
    refused = api.post(f"/api/vms/{vm.pk}/grow_disk/", {"disk_gib": 2}, format="json")
    assert refused.status_code == 409 and refused.json() == {"code": "conflict", "detail": GROW_REFUSAL}
    assert_disk_unchanged(vm)
    same = api.post(f"/api/vms/{vm.pk}/grow_disk/", {"disk_gib": 1}, format="json")
    assert same.status_code == 200 and same.json()["message"] == GROW_NOOP


@claim("grow-disk", "Slack")
def slack_grow_disk(test_host, alice, link, slack) -> None:
    linked_alice(alice, link)
    vm = make_vm(alice)
    assert GROW_REFUSAL in slack_run(slack, "grow-disk web-1 2")
    assert_disk_unchanged(vm)
    assert GROW_NOOP in slack_run(slack, "grow-disk web-1 1")


@claim("grow-disk", "CLI")
def cli_grow_disk(test_host, alice) -> None:
    vm = make_vm(alice)
    assert cli_error("--wait", "grow-disk", NAME, "2") == (5, GROW_REFUSAL)
    assert_disk_unchanged(vm)
    assert cli("--wait", "grow-disk", NAME, "1").strip() == GROW_NOOP


# === Snapshots (disks + memory): take / list / revert / delete =====================================

@claim("snapshots", "Web")
def web_snapshots(test_host, alice) -> None:
    vm = make_vm(alice)
    browser = Browser(alice)
    detail = f"/vms/{vm.pk}/"
    page = browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/snapshots/", name="before-upgrade")
    assert "Taking snapshot before-upgrade of web-1." in page.text
    assert_snapshot(vm, "before-upgrade", via=Via.WEB)
    listed = browser.get(f"/vms/{vm.pk}/snapshots/").text  # the panel, as live.js reloads it
    assert "before-upgrade Disks and memory (was running)" in listed
    assert "before-upgrade Disks and memory (was running)" in browser.get(detail).text
    snapshot = vm.snapshots.get()
    force_off(vm)
    page = browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/snapshots/{snapshot.pk}/revert/")
    assert "Reverting web-1 to snapshot before-upgrade." in page.text
    assert_reverted(vm, via=Via.WEB)
    page = browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/snapshots/{snapshot.pk}/delete/")
    assert "Deleting snapshot before-upgrade of web-1." in page.text and "No snapshots yet." in page.text
    assert_snapshot_deleted(vm, "before-upgrade", via=Via.WEB)


@claim("snapshots", "REST API")
def api_snapshots(test_host, alice) -> None:
    vm = make_vm(alice)
    api = api_client(alice)
    url = f"/api/vms/{vm.pk}/snapshots/"
    taken = api.post(url, {"name": "before-upgrade"}, format="json")
    assert taken.status_code == 202 and taken.json()["message"] == "Taking snapshot before-upgrade of web-1."
    assert_snapshot(vm, "before-upgrade", via=Via.API)
    [listed] = api.get(url).json()["results"]
    assert (listed["name"], listed["status"], listed["has_memory"]) == ("before-upgrade", "ready", True)
    force_off(vm)
    reverted = api.post(f"{url}before-upgrade/revert/")
    assert reverted.status_code == 202
    assert reverted.json()["message"] == "Reverting web-1 to snapshot before-upgrade."
    assert_reverted(vm, via=Via.API)
    deleted = api.delete(f"{url}before-upgrade/")
    assert deleted.status_code == 202
    assert deleted.json()["message"] == "Deleting snapshot before-upgrade of web-1."
    assert_snapshot_deleted(vm, "before-upgrade", via=Via.API)
    assert api.get(url).json()["results"] == []


@claim("snapshots", "Slack", "take, list, revert")
def slack_snapshots(test_host, alice, link, slack) -> None:
    from chatops.commands import ParseError, parse

    linked_alice(alice, link)
    vm = make_vm(alice)
    said = slack_run(slack, "snapshot web-1 before-upgrade")
    assert "Taking snapshot before-upgrade of web-1." in said
    assert "📸 Snapshot `before-upgrade` of *web-1* taken." in said
    assert_snapshot(vm, "before-upgrade", via=Via.SLACK)
    said = slack_run(slack, "snapshots web-1")
    assert "*Snapshots of web-1* (1)" in said
    assert re.search(r"`before-upgrade` · disks and memory · [0-9.]+ [KMG]i?B · ready", said), said  # its size too
    force_off(vm)
    said = slack_run(slack, "revert web-1 before-upgrade")  # asks first; slack_run confirms
    assert "Revert *web-1* to snapshot `before-upgrade`?" in said
    assert "⏪ *web-1* was reverted to snapshot `before-upgrade`." in said
    assert_reverted(vm, via=Via.SLACK)
    # The cell leaves out "delete": Slack has no command that deletes a snapshot.
    for text in ("delete-snapshot web-1 before-upgrade", "snapshot-delete web-1 before-upgrade"):
        with pytest.raises(ParseError, match="Unknown command"):
            parse(text)
    assert "Unexpected argument 'before-upgrade'" in slack_run(slack, "delete web-1 before-upgrade")
    assert vm.snapshots.filter(name="before-upgrade").exists()


@claim("snapshots", "CLI")
def cli_snapshots(test_host, alice) -> None:
    vm = make_vm(alice)
    out = cli("--wait", "snapshot", NAME, "before-upgrade")
    assert "Taking snapshot before-upgrade of web-1." in out and "succeeded 100% Done" in out
    assert_snapshot(vm, "before-upgrade", via=Via.CLI)
    assert " ".join(cli("snapshots", NAME).split()).startswith("before-upgrade ready disks+memory ")
    force_off(vm)
    out = cli("--wait", "revert", NAME, "before-upgrade")
    assert "Reverting web-1 to snapshot before-upgrade." in out and "succeeded 100% Done" in out
    assert_reverted(vm, via=Via.CLI)
    out = cli("--wait", "delete-snapshot", NAME, "before-upgrade")
    assert "Deleting snapshot before-upgrade of web-1." in out and "succeeded 100% Done" in out
    assert_snapshot_deleted(vm, "before-upgrade", via=Via.CLI)
    assert cli("snapshots", NAME) == ""


@claim("snapshots", "Admin", "view")
def admin_snapshots(test_host, alice, admin_user) -> None:
    vm = make_vm(alice)
    take_snapshot(vm)
    admin = Browser(admin_user)
    page = admin.get(f"/admin/vms/vm/{vm.pk}/change/")
    [inline] = [fs for fs in page.response.context["inline_admin_formsets"] if fs.opts.model is Snapshot]
    [row] = [form.original for form in inline]
    assert (row.name, row.status, row.has_memory) == ("before-upgrade", "ready", True)
    assert "before-upgrade" in page.text
    # View only, as the cell says: no snapshot is added, changed or deleted here, and no action makes one.
    assert not (inline.has_add_permission or inline.has_change_permission or inline.has_delete_permission)
    actions = django_admin.site._registry[VM].get_actions(page.response.wsgi_request)
    assert not [name for name in actions if "snapshot" in name], sorted(actions)
    assert admin.client.get("/admin/vms/snapshot/").status_code == 404  # no admin of its own


# === Quota usage =====================================================================================

@claim("quota", "Web")
def web_quota(test_host, alice) -> None:
    make_vm(alice, **QUOTA_VM)
    text = Browser(alice).get("/").text
    for words in ("VMs 1 / 3", "vCPUs 2 / 4", "Memory 512 MiB / 2 GiB", "Disk 2 / 20 GiB"):
        assert words in text, words


@claim("quota", "REST API")
def api_quota(test_host, alice) -> None:
    make_vm(alice, **QUOTA_VM)
    body = api_client(alice).get("/api/quota/").json()
    usage = {r["resource"]: (r["used"], r["limit"]) for r in body["user"]["resources"]}
    assert usage == {"vms": (1, 3), "vcpus": (2, 4), "memory_mib": (512, 2048), "disk_gib": (2, 20), "backup_gib": (0, 40)}


@claim("quota", "Slack")
def slack_quota(test_host, alice, link, slack) -> None:
    linked_alice(alice, link)
    make_vm(alice, **QUOTA_VM)
    said = slack_run(slack, "quota")
    assert "*Your quota*" in said
    for words in QUOTA_USAGE:
        assert words in said, words


@claim("quota", "CLI")
def cli_quota(test_host, alice) -> None:
    make_vm(alice, **QUOTA_VM)
    lines = [" ".join(line.split()) for line in cli("quota").splitlines()]
    assert lines == ["VMs 1 / 3", "vCPUs 2 / 4", "Memory 512 / 2048 MiB", "Disk 2 / 20 GiB", "Backup space 0 / 40 GiB"]


@claim("quota", "Admin")
def admin_quota(test_host, alice, admin_user) -> None:
    make_vm(alice, **QUOTA_VM)
    text = Browser(admin_user).get("/admin/quotas/quota/").text
    assert "alice 1 / 3 2 / 4 512 MiB / 2 GiB 2 / 20 GiB" in text, text


# === Jobs with live progress, audit trail ============================================================

async def live_events(browser: Browser, during: Callable[[], Any]) -> list[dict]:
    """Open the pages' live websocket (/ws/updates/) in `browser`'s session, run `during`, and return
    every event pushed until the socket falls quiet."""
    from portal.asgi import application

    session = browser.client.cookies["sessionid"].value
    socket = WebsocketCommunicator(application, "/ws/updates/", headers=[
        (b"host", b"testserver"), (b"origin", b"http://testserver"),
        (b"cookie", f"sessionid={session}".encode())])
    connected, _ = await socket.connect(timeout=5)
    assert connected
    events: list[dict] = []
    try:
        await sync_to_async(during)()
        while not await socket.receive_nothing(timeout=2):
            events.append(await socket.receive_json_from())
        return events
    finally:
        await socket.disconnect()


@claim("jobs", "Web")
def web_jobs(test_host, alice) -> None:
    vm = make_vm(alice)
    browser = Browser(alice)
    detail = f"/vms/{vm.pk}/"
    # Live: while the stop job runs, the page's websocket hears each of its steps.
    events = async_to_sync(live_events)(browser, lambda: browser.submit(
        browser.get(detail), action=f"/vms/{vm.pk}/action/stop/"))
    job = job_of(vm, "vm.stop", via=Via.WEB)
    steps = [(e["status"], e["progress"], e["step"])
             for e in events if e.get("kind") == "job" and e["id"] == str(job.pk)]
    assert ("running", 10, "Sending the ACPI power-off signal") in steps, steps
    assert steps[-1] == ("succeeded", 100, "Done"), steps
    assert {"kind": "vm", "id": vm.pk, "status": "stopped"}.items() <= next(
        e for e in reversed(events) if e.get("kind") == "vm" and e.get("id") == vm.pk).items()
    # The jobs pages: the list, and the job with its progress, step and who asked through which door.
    assert "Stop web-1 Succeeded 100% Done" in browser.get("/jobs/").text
    page = browser.get(f"/jobs/{job.pk}/").text
    assert "Succeeded 100% Done" in page and "Started by alice · Web portal" in page
    # The audit trail: the VM page's activity, the request and its outcome, by whom and through which door.
    text = browser.get(detail).text
    assert "Stopping web-1" in text and "Stopped web-1 (ACPI)" in text and "alice · Web portal" in text


@claim("jobs", "REST API")
def api_jobs(test_host, alice, bob, monkeypatch) -> None:
    vm = make_vm(alice)
    api = api_client(alice)
    # Live: a client polling the job while it runs sees it running, at its current step.
    seen = while_a_job_runs(monkeypatch, lambda: api.get("/api/jobs/?status=running").json()["results"])
    answer = api.post(f"/api/vms/{vm.pk}/actions/", {"action": "stop"}, format="json")
    assert answer.status_code == 202
    [[running]] = seen
    assert (running["kind"], running["progress"], running["step"]) == (
        "vm.stop", 10, "Sending the ACPI power-off signal")
    job = api.get(answer.json()["job"]["url"]).json()
    assert (job["status"], job["progress"], job["step"]) == ("succeeded", 100, "Done")
    assert (job["kind"], job["actor"], job["via"], job["target_name"]) == ("vm.stop", "alice", "api", NAME)
    assert "Sending the ACPI power-off signal" in job["log"] and job["finished_at"]
    assert [j["id"] for j in api.get(f"/api/vms/{vm.pk}/jobs/").json()["results"]][0] == job["id"]
    # The audit trail: what the API did is recorded with via=api, and readable through the API.
    audited(vm, "vm.stop", via=Via.API)
    audited(vm, "vm.stopped", via=Via.API)
    events = api.get(f"/api/vms/{vm.pk}/events/")
    assert events.status_code == 200, f"the REST API has no audit trail to read: {events.status_code}"
    trail = [(e["action"], e["actor"], e["via"], e["message"]) for e in events.json()["results"]]
    assert ("vm.stop", "alice", "api", "Stopping web-1") in trail
    assert ("vm.stopped", "alice", "api", "Stopped web-1 (ACPI)") in trail
    assert api.get(f"/api/vms/{vm.pk}/").json()["events_url"] == f"http://testserver/api/vms/{vm.pk}/events/"
    assert api_client(bob).get(f"/api/vms/{vm.pk}/events/").json()["code"] == "not_found"  # not theirs


@claim("jobs", "Slack", "notifications")
def slack_jobs(test_host, alice, link, slack) -> None:
    linked_alice(alice, link)
    vm = make_vm(alice)
    # A job asked in Slack is announced with its id, and its end is told in that message's thread.
    slack.fake.clear()
    slack.command("pause web-1")
    job = job_of(vm, "vm.pause", via=Via.SLACK)
    announced, ended = slack.fake.posts(CHANNEL)
    assert f"⏳ Pausing web-1. · job `{str(job.pk)[:8]}` (asked by <@UALICE>)" in announced.text
    assert ended.body["thread_ts"] == announced.ts and "⏸️ *web-1* is paused." in ended.text
    assert audited(vm, "vm.pause", via=Via.SLACK).data["slack_user"] == "UALICE"
    # A subscribed channel hears of the jobs of the VMs its owner may see, whatever door asked.
    assert "This channel gets" in slack_run(slack, "subscribe jobs", channel="CTEAM")
    slack.fake.clear()
    browser = Browser(alice)
    browser.submit(browser.get(f"/vms/{vm.pk}/"), action=f"/vms/{vm.pk}/action/resume/")
    job_of(vm, "vm.resume", via=Via.WEB)
    [notice] = slack.fake.posts("CTEAM")
    assert "▶️ *web-1* is running again." in notice.text and "by alice via Web portal" in notice.text


@claim("jobs", "CLI", "`--wait`")
def cli_jobs(test_host, alice) -> None:
    vm = make_vm(alice)
    out = cli("stop", NAME)  # without --wait: the job's id, and back to the prompt
    job = job_of(vm, "vm.stop", via=Via.CLI)
    assert out.splitlines() == ["Stopping web-1.", f"job {job.pk}"]
    out = cli("--wait", "start", NAME)  # --wait follows the job to its end
    job = job_of(vm, "vm.start", via=Via.CLI)
    assert out.splitlines() == ["Starting web-1.", f"job {job.pk}", "succeeded 100% Done"]
    # A job that fails ends the command with status 1 and the job's error.
    libvirt().destroy(str(vm.uuid))
    libvirt().undefine(str(vm.uuid))  # the domain vanished behind the portal's back
    code, message = cli_error("--wait", "pause", NAME)
    failed = Job.objects.get(target_id=str(vm.pk), kind="vm.pause")
    assert (code, failed.status, message) == (1, JobStatus.FAILED, failed.error) and failed.error


@claim("jobs", "Admin", "progress, audit")  # shown when the page loads; only the web pages are pushed live
def admin_jobs(test_host, alice, admin_user, monkeypatch) -> None:
    vm = make_vm(alice)
    admin = Browser(admin_user)
    changelist = "/admin/vms/vm/"
    # While a job runs, the jobs list shows it running at its current step.
    seen = while_a_job_runs(monkeypatch, lambda: admin.get("/admin/portal/job/?status__exact=running").html)
    admin.submit(admin.get(changelist), action=changelist,
                 data={"action": "stop", "_selected_action": str(vm.pk)})
    [running] = seen
    assert "vm.stop" in running and "10%" in running
    assert 'title="Sending the ACPI power-off signal"' in running  # the step, on the progress bar
    job = job_of(vm, "vm.stop", via=Via.ADMIN)
    page = admin.get(f"/admin/portal/job/{job.pk}/change/").text
    assert "Succeeded" in page and "100%" in page and "Sending the ACPI power-off signal" in page
    # The audit trail, with who did what through which door.
    trail = admin.get("/admin/portal/auditevent/", target_id=str(vm.pk)).text
    assert "root-admin Admin vm.stop" in trail and "root-admin Admin vm.stopped" in trail
    assert "Stopping web-1" in trail and "Stopped web-1 (ACPI)" in trail


# === Screen (noVNC) and serial terminal (xterm.js) in the browser =====================================

@claim("consoles", "Web")
def web_consoles(test_host, alice, monkeypatch) -> None:
    from consoles.models import ConsoleTicket
    from portal.hypervisor.driver import LibvirtDriver

    vm = make_vm(alice)
    browser = Browser(alice)
    detail = browser.get(f"/vms/{vm.pk}/").html
    for kind in ("screen", "terminal"):
        assert f'href="/consoles/vm/{vm.pk}/{kind}/"' in detail
    screen = browser.get(f"/consoles/vm/{vm.pk}/screen/")
    assert "Screen of web-1" in screen.text and "/static/consoles/screen.js" in screen.html
    assert 'from "../vendor/novnc/core/rfb.js"' in (STATIC / "consoles/screen.js").read_text()
    terminal = browser.get(f"/consoles/vm/{vm.pk}/terminal/")
    assert "Terminal of web-1" in terminal.text and "/static/consoles/terminal.js" in terminal.html
    assert "/static/vendor/xterm/xterm.css" in terminal.html
    assert 'from "../vendor/xterm/xterm.mjs"' in (STATIC / "consoles/terminal.js").read_text()

    def ticket(page: Page, kind: str):
        """What the page's script does first: POST for a one-time ticket (with the page's CSRF token)."""
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.html).group(1)
        return browser.client.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": kind}, HTTP_X_CSRFTOKEN=csrf)

    # libvirt's test driver has no consoles, and the ticket endpoint says so in plain words ...
    refused = ticket(screen, "screen")
    assert refused.status_code == 409, refused.content
    assert refused.json()["detail"] == (
        "Consoles are not available for VMs on testhost: its hypervisor driver has none.")
    # ... a host that has them (qemu:///system declares both) gets a ticket per console, for the socket.
    real = LibvirtDriver.capabilities
    monkeypatch.setattr(LibvirtDriver, "capabilities",
                        lambda self: replace(real(self), console=True, graphics=True))
    for page, kind in ((screen, "screen"), (terminal, "serial")):
        issued = ticket(page, kind)
        assert issued.status_code == 200, issued.content
        body = issued.json()
        assert body["url"] == f"/ws/consoles/vm/{vm.pk}/{kind}/?ticket={body['ticket']}"
        assert body["kind"] == kind
    tickets = ConsoleTicket.objects.filter(user=alice, vm=vm)
    assert set(tickets.values_list("kind", flat=True)) == {"screen", "serial"}


@claim("consoles", "REST API", "one-time URL")
def api_consoles(test_host, alice) -> None:
    vm = make_vm(alice)
    api = api_client(alice)
    for kind in ("screen", "terminal"):
        issued = api.post(f"/api/vms/{vm.pk}/console/", {"kind": kind}, format="json")
        assert issued.status_code == 201 and issued.json()["kind"] == kind, issued.content
        assert_console_link(alice, issued.json()["url"], vm, kind)
    assert AuditEvent.objects.filter(action="console.link", via=Via.API, target_id=str(vm.pk)).count() == 2


@claim("consoles", "Slack", "one-time link")
def slack_consoles(test_host, alice, link, slack) -> None:
    linked_alice(alice, link)
    vm = make_vm(alice)
    response = slack.command("console web-1")
    assert reply_of(response)["response_type"] == "ephemeral"  # only the asker sees the links
    said = reply_text(response)
    screen, terminal = re.findall(r"<(http://portal\.test/consoles/link/[^|>]+)\|", said)
    assert "Open the screen of web-1" in said and "each works once" in said
    assert_console_link(alice, screen, vm, "screen")
    assert_console_link(alice, terminal, vm, "terminal")
    assert AuditEvent.objects.filter(action="console.link", via=Via.SLACK, target_id=str(vm.pk)).count() == 2


@claim("consoles", "CLI", "one-time URL")
def cli_consoles(test_host, alice, settings) -> None:
    settings.PORTAL_BASE_URL = "http://portal.test"
    vm = make_vm(alice)
    lines = cli("console", NAME).splitlines()
    urls = dict(line.split() for line in lines[:2])
    assert set(urls) == {"screen", "terminal"}
    assert lines[2].startswith("Each URL works once, for alice, until ")
    for kind, url in urls.items():
        assert url.startswith("http://portal.test/consoles/link/")
        assert_console_link(alice, url, vm, kind)
    assert AuditEvent.objects.filter(action="console.link", via=Via.CLI, target_id=str(vm.pk)).count() == 2


# === Networks: pick at create, add / remove NICs, addresses and the `ssh` line =========================
# Set-up, not under test: two networks open to all on the test host, made through networks.services:
# lan, everyone's default, and lab, which each check picks at create (without the pick, the VM would be
# on lan). libvirt's test driver cannot hot-plug NICs (the job fails and says so: tests/vms/test_nics.py),
# so NICs are added to and removed from the stopped VM, whose definition changes; hot-plug into running
# guests is proven on a namespace host (tests/networks/test_qemu_networks.py). Nor has the test driver DHCP
# leases: set-up writes the address the monitor would have read from one (and the image's login user), and
# each door must show that address and the ready `ssh` line.

ADDRESS = "10.78.0.23"
SSH_LINE = f"ssh debian@{ADDRESS}"


def lan_and_lab(make_network) -> dict[str, Network]:
    """Set-up, not under test: lan (open to all, the default) and lab (open to all)."""
    return {"lan": make_network("lan", "10.77.0.0/24", is_public=True, is_default=True),
            "lab": make_network("lab", "10.78.0.0/24", is_public=True)}


def assert_nics(vm: VM, networks: list[str]) -> list[VMNic]:
    """The VM's NICs, oldest first: attached, on these networks, and so in libvirt's domain XML (the
    definition, and the live XML while the domain runs)."""
    vm.refresh_from_db()
    nics = list(vm.nics.select_related("network").order_by("created_at", "id"))
    assert [(n.network.name, n.status) for n in nics] == [(name, VMNic.Status.ATTACHED) for name in networks]
    expected = [(n.mac, n.network.libvirt_name) for n in nics]
    uuid = str(vm.uuid)
    for inactive in (True, False) if libvirt().domain_info(uuid).state.is_active else (True,):
        found = domain_xml.parse_interfaces(libvirt().domain_xml(uuid, inactive=inactive))
        assert [(i.mac, i.network) for i in found] == expected, (inactive, found)
    return nics


def lease_seen(vm: VM) -> None:
    """Set-up, not under test: the address the monitor writes when the guest has taken a DHCP lease, and an
    image whose SSH login user is debian (vms.selectors.vm_ssh_command needs both for its line)."""
    VMNic.objects.filter(vm=vm).update(ip_address=ADDRESS, ip_seen_at=timezone.now())
    Image.objects.filter(pk=vm.image_id).update(login_user="debian")


def assert_nic_job(vm: VM, op: str, *, via: str) -> None:
    """A NIC added or removed through a door (`op`: add | remove): its job succeeded, both audit rows."""
    job_of(vm, f"vm.nic.{op}", via=via)
    audited(vm, f"vm.nic.{op}", via=via)
    audited(vm, f"vm.nic.{op.removesuffix('e')}ed", via=via)


@claim("networks", "Web")
def web_networks(test_host, alice, make_network) -> None:
    nets = lan_and_lab(make_network)
    browser = Browser(alice)
    form = browser.get("/vms/new/")
    [create] = [f for f in form.forms if f.method == "post" and "networks" in f.values]
    assert create.values["networks"] == [str(nets["lan"].pk)]  # the default is ticked; lab is picked instead
    page = browser.submit(form, action="/vms/new/", name=NAME, flavor="custom", networks=[str(nets["lab"].pk)],
                          **{k: str(v) for k, v in SMALL.items()})
    assert "Creating web-1." in page.text
    vm = assert_created(alice, via=Via.WEB)
    [nic] = assert_nics(vm, ["lab"])
    detail = f"/vms/{vm.pk}/"
    assert f"lab Waiting for a DHCP lease… {nic.mac} virtio Attached" in page.text, page.text
    lease_seen(vm)
    page = browser.get(detail)
    assert f'value="{SSH_LINE}"' in page.html and f"lab {ADDRESS} {nic.mac} virtio Attached" in page.text
    force_off(vm)
    page = browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/nics/", network="lan")
    assert "Adding a NIC on lan to web-1." in page.text and page.url == detail
    assert_nic_job(vm, "add", via=Via.WEB)
    _, added = assert_nics(vm, ["lab", "lan"])
    page = browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/nics/{nic.pk}/remove/")
    assert f"Removing NIC {nic.mac} from web-1." in page.text
    assert_nic_job(vm, "remove", via=Via.WEB)
    assert assert_nics(vm, ["lan"]) == [added]


@claim("networks", "REST API")
def api_networks(test_host, alice, make_network) -> None:
    lan_and_lab(make_network)
    api = api_client(alice)
    created = api.post("/api/vms/", {"name": NAME, **SMALL, "networks": ["lab"]}, format="json")
    assert created.status_code == 202, created.content
    vm = assert_created(alice, via=Via.API)
    [nic] = assert_nics(vm, ["lab"])
    body = created.json()["vm"]
    assert [(n["network"], n["mac"], n["ip_address"]) for n in body["nics"]] == [("lab", nic.mac, None)]
    assert body["ssh"] is None  # no address yet
    lease_seen(vm)
    body = api.get(f"/api/vms/{vm.pk}/").json()
    assert body["ssh"] == SSH_LINE and body["nics"][0]["ip_address"] == ADDRESS
    force_off(vm)
    added = api.post(body["nics_url"], {"network": "lan"}, format="json")
    assert added.status_code == 202 and added.json()["message"] == "Adding a NIC on lan to web-1.", added.content
    assert_nic_job(vm, "add", via=Via.API)
    _, new = assert_nics(vm, ["lab", "lan"])
    assert added.json()["nic"]["mac"] == new.mac
    removed = api.delete(body["nics"][0]["url"])
    assert removed.status_code == 202 and removed.json()["message"] == f"Removing NIC {nic.mac} from web-1."
    assert_nic_job(vm, "remove", via=Via.API)
    assert assert_nics(vm, ["lan"]) == [new]
    assert [n["network"] for n in api.get(body["nics_url"]).json()["results"]] == ["lan"]


@claim("networks", "Slack", "create `--net`, info")
def slack_networks(test_host, alice, link, slack, small_flavor, make_network) -> None:
    from chatops.commands import ParseError, parse

    linked_alice(alice, link)
    lan_and_lab(make_network)
    said = slack_run(slack, "create web-1 --flavor small --net lab")
    assert "<@UALICE> is creating *web-1* (1 vCPU · 128 MiB · 1 GiB · test-blank) on lab" in said
    vm = assert_created(alice, via=Via.SLACK)
    [nic] = assert_nics(vm, ["lab"])
    said = slack_run(slack, "info web-1")
    assert f"• `lab` · `{nic.mac}` · _no address yet_" in said and "The ssh line appears once" in said
    lease_seen(vm)
    said = slack_run(slack, "info web-1")
    assert f"• `lab` · `{nic.mac}` · `{ADDRESS}`" in said and f"```{SSH_LINE}```" in said
    # The cell leaves out adding and removing NICs: Slack has no command for either.
    for text in ("nic-add web-1 lan", "nic-remove web-1 lab", "add-nic web-1 lan", "remove-nic web-1 lab"):
        with pytest.raises(ParseError, match="Unknown command"):
            parse(text)


@claim("networks", "CLI")
def cli_networks(test_host, alice, make_network) -> None:
    lan_and_lab(make_network)
    out = cli("create", NAME, "--vcpus", "1", "--memory-mib", "128", "--disk-gib", "1", "--net", "lab", "--wait")
    assert "Creating web-1." in out and "succeeded 100% Done" in out
    vm = assert_created(alice, via=Via.CLI)
    [nic] = assert_nics(vm, ["lab"])
    shown = [" ".join(line.split()) for line in cli("show", NAME).splitlines()]
    assert f"nic {nic.pk} lab {nic.mac} virtio attached -" in shown, shown
    lease_seen(vm)
    shown = [" ".join(line.split()) for line in cli("show", NAME).splitlines()]
    assert f"nic {nic.pk} lab {nic.mac} virtio attached {ADDRESS}" in shown and f"ssh {SSH_LINE}" in shown, shown
    force_off(vm)
    out = cli("--wait", "nic-add", NAME, "lan")
    _, added = assert_nics(vm, ["lab", "lan"])
    assert out.splitlines()[0] == f"Adding a NIC on lan to web-1. MAC {added.mac}." and "succeeded 100% Done" in out
    assert_nic_job(vm, "add", via=Via.CLI)
    out = cli("--wait", "nic-remove", NAME, nic.mac)
    assert out.splitlines()[0] == f"Removing NIC {nic.mac} from web-1." and "succeeded 100% Done" in out
    assert_nic_job(vm, "remove", via=Via.CLI)
    assert assert_nics(vm, ["lan"]) == [added]


@claim("networks", "Admin", "networks, view NICs")
def admin_networks(test_host, alice, admin_user) -> None:
    from vms.services import vm_create

    admin = Browser(admin_user)
    add = "/admin/networks/network/add/"
    page = admin.submit(admin.get(add), action=add, button="_save", name="lab", mode="isolated",
                        cidr="10.78.0.0/24", on_hosts=[str(test_host.pk)], is_public="on")
    assert "was added successfully" in page.text, page.text
    lab = Network.objects.get(name="lab")
    assert (lab.mode, lab.cidr, lab.is_public) == ("isolated", "10.78.0.0/24", True)
    assert libvirt().network_info(lab.libvirt_name).active  # defined and started on the host
    event = AuditEvent.objects.get(action="network.create")
    assert (event.actor, event.via) == (admin_user, Via.ADMIN)
    # Users' NICs: a VM of alice's on lab (set-up), whose address is known. The admin shows them, read-only.
    vm = vm_create(actor=alice, via=Via.SYSTEM, name=NAME, networks=["lab"], **SMALL).vm
    [nic] = assert_nics(vm, ["lab"])
    lease_seen(vm)
    page = admin.get(f"/admin/vms/vm/{vm.pk}/change/")
    [inline] = [fs for fs in page.response.context["inline_admin_formsets"] if fs.opts.model is VMNic]
    assert [form.original for form in inline] == [nic]
    assert f"lab {nic.mac} virtio (fastest; Linux guests) — Attached {ADDRESS}" in page.text, page.text
    assert f"Ssh: {SSH_LINE}" in page.text
    assert not (inline.has_add_permission or inline.has_change_permission or inline.has_delete_permission)
    actions = django_admin.site._registry[VM].get_actions(page.response.wsgi_request)
    assert not [name for name in actions if "nic" in name], sorted(actions)
    assert admin.client.get("/admin/vms/vmnic/").status_code == 404  # no admin of its own
    listed = admin.get("/admin/vms/vm/").text  # the VMs list has an addresses column
    assert f"web-1 alice - Running running testhost 1 / 128 MiB / 1 GiB Blank (test driver) {ADDRESS}" in listed


# === SSH keys for cloud-init =========================================================================
# Each door adds a real ED25519 public key (as ssh-keygen writes it), lists it with its fingerprint, and
# refuses a key pasted with authorized_keys options in front of it, in that door's words. A key that is
# added is in the cloud-config of the owner's next VM (vms.cloudinit; the seeds themselves are proven in
# tests/vms/test_cloudinit.py and on a booted Debian guest in tests/networks/test_qemu_debian.py).

KEYS_PAGE = "/account/keys/"
KEY_REFUSAL = ('Paste only the key itself ("ssh-ed25519 AAAA… comment"), without authorized_keys options such as '
               'command="…", from="…" or no-pty in front of it.')


def with_options(line: str) -> str:
    return f'command="rm -rf /" {line}'


def assert_key_added(user, line: str, *, via: str, actor=None) -> SSHKey:
    """The key is the user's, added by `actor` (the user) through `via`, audited, and cloud-init would put
    it into the user's next VM."""
    from vms.cloudinit import base_cloud_config

    key = SSHKey.objects.get(user=user)
    assert (key.public_key, key.created_via) == (line, via)
    event = AuditEvent.objects.get(action="sshkey.add")
    assert (event.actor, event.via) == (actor or user, via)
    [login] = base_cloud_config(VM(owner=user, name=NAME))["users"]
    assert login["ssh_authorized_keys"] == [line]
    return key


@claim("keys", "Web")
def web_keys(alice) -> None:
    line = ed25519_line("alice@laptop")
    browser = Browser(alice)
    assert f'href="{KEYS_PAGE}"' in browser.get("/").html  # the account menu leads there
    page = browser.submit(browser.get(KEYS_PAGE), action=KEYS_PAGE, public_key=with_options(line), name="",
                          expect=400)
    assert KEY_REFUSAL in page.text and "No SSH keys yet." in page.text
    assert not SSHKey.objects.exists()
    page = browser.submit(page, action=KEYS_PAGE, public_key=line, name="")
    key = assert_key_added(alice, line, via=Via.WEB)
    assert f"Added SSH key alice@laptop ({key.fingerprint})." in page.text and page.url == KEYS_PAGE
    assert f"alice@laptop ED25519 256 bits {key.fingerprint}" in page.text


@claim("keys", "REST API")
def api_keys(alice) -> None:
    line = ed25519_line("alice@laptop")
    api = api_client(alice)
    refused = api.post("/api/keys/", {"public_key": with_options(line)}, format="json")
    assert refused.status_code == 400 and refused.json() == {
        "code": "invalid", "detail": KEY_REFUSAL, "errors": {"public_key": [KEY_REFUSAL]}}, refused.content
    assert not SSHKey.objects.exists()
    added = api.post("/api/keys/", {"public_key": line}, format="json")
    assert added.status_code == 201, added.content
    key = assert_key_added(alice, line, via=Via.API)
    [listed] = api.get("/api/keys/").json()["results"]
    assert listed == added.json()
    assert (listed["name"], listed["type"], listed["fingerprint"]) == ("alice@laptop", "ssh-ed25519", key.fingerprint)


@claim("keys", "Slack", "list")
def slack_keys(alice, link, slack) -> None:
    from accounts.services import sshkey_add

    linked_alice(alice, link)
    key = sshkey_add(actor=alice, via=Via.SYSTEM, public_key=ed25519_line("alice@laptop"))  # set-up
    said = slack_run(slack, "keys")
    assert "*Your SSH keys* (1)" in said and f"🔑 *alice@laptop* — ED25519 256 · `{key.fingerprint}`" in said
    # The cell says only "list": keys are not added in Slack (a key pasted in a chat stays in its history).
    said = slack_run(slack, f"keys add {ed25519_line('alice@desktop')}")
    assert "`/vm keys` only lists your SSH keys. Add or delete keys in the portal" in said
    assert list(SSHKey.objects.all()) == [key]


@claim("keys", "Admin")
def admin_keys(alice, admin_user) -> None:
    line = ed25519_line("alice@laptop")
    admin = Browser(admin_user)
    add = "/admin/accounts/sshkey/add/"
    page = admin.submit(admin.get(add, user=str(alice.pk)), action=add, button="_save", user=str(alice.pk),
                        public_key=with_options(line))
    assert KEY_REFUSAL in page.text and not SSHKey.objects.exists()
    page = admin.submit(admin.get(add, user=str(alice.pk)), action=add, button="_save", user=str(alice.pk),
                        public_key=line)
    assert "was added successfully" in page.text, page.text
    key = assert_key_added(alice, line, via=Via.ADMIN, actor=admin_user)
    listed = admin.get("/admin/accounts/sshkey/").text
    assert f"alice@laptop alice ED25519 256 {key.fingerprint}" in listed, listed


# === Image library: list / import (upload, URL, host file) / delete ===================================
# Each door imports the same small qcow2 (made with qemu-img): from the URL of an HTTP server on loopback,
# from its file inside the import directory (administrators only), or uploaded with tus (the API). Each
# import is an `image.import` job that must succeed through the door, leaving the image in the pool and
# nothing in staging; each delete removes the row and its volume.

@dataclass(frozen=True)
class ImageSource:
    """One small qcow2 disk image, as a host file (inside the import directory) and at a loopback URL."""

    path: Path
    url: str
    data: bytes = field(repr=False)


@pytest.fixture
def image_source(settings, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    settings.IMAGE_IMPORT_DIRS = [str(incoming)]
    settings.IMAGE_STAGING_DIR = str(tmp_path / "staging")
    settings.IMAGE_URL_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # users may import from this loopback server
    disk = make_source("qcow2", tmp_path, incoming / "disk.qcow2")
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ImageHandler.files["/disk.qcow2"] = disk.read_bytes()
    try:
        yield ImageSource(disk, f"http://127.0.0.1:{server.server_address[1]}/disk.qcow2", disk.read_bytes())
    finally:
        server.shutdown()
        server.server_close()


def import_image(owner, source: ImageSource, name: str = "from-url") -> Image:
    """Set-up, not under test: the owner's image, imported from the URL through the service."""
    from storage.imports import image_import

    image_import(actor=owner, via=Via.SYSTEM, source="url", url=source.url, name=name, title=name)
    return Image.objects.get(name=name)


def assert_imported(name: str, *, owner, via: str, source: str) -> Image:
    """An image imported through a door: converted to qcow2 in the pool, its job succeeded, audited."""
    from django.conf import settings

    image = Image.objects.get(name=name)
    assert (image.kind, image.format, image.source_format, image.owner) == ("disk", "qcow2", "qcow2", owner)
    assert image.source == source and len(image.checksum_sha256) == 64
    assert image.volume_name in {v.name for v in libvirt().list_volumes(pool=settings.STORAGE_POOL)}
    job = Job.objects.get(kind="image.import", target_id=str(image.pk))
    assert (job.via, job.status) == (via, JobStatus.SUCCEEDED), (job.via, job.status, job.error)
    assert AuditEvent.objects.filter(action="image.import", via=via, target_id=str(image.pk)).exists()
    assert not [f for _, _, files in os.walk(settings.IMAGE_STAGING_DIR) for f in files]  # nothing left staged
    return image


def assert_image_deleted(image: Image, *, via: str) -> None:
    from django.conf import settings

    assert not Image.objects.filter(pk=image.pk).exists()
    assert image.volume_name not in {v.name for v in libvirt().list_volumes(pool=settings.STORAGE_POOL)}
    assert AuditEvent.objects.filter(action="image.delete", via=via, target_id=str(image.pk)).exists()


@claim("images", "Web", "list, delete")
def web_images(test_host, alice, image_source) -> None:
    image = import_image(alice, image_source)
    browser = Browser(alice)
    assert 'href="/images/"' in browser.get("/").html  # in the navigation
    listed = browser.get("/images/", mine="1")
    assert f'<tr data-image="{image.name}"' in listed.html and "test-blank" not in listed.text
    assert "from-url from-url Disk image qcow2 2 MiB" in listed.text, listed.text
    assert '<tr data-image="test-blank"' in browser.get("/images/").html  # all I may use: the library's too
    detail = f"/images/{image.pk}/"
    page = browser.submit(browser.get(detail), action=f"/images/{image.pk}/delete/")
    assert "Deleted image from-url." in page.text and page.url == "/images/"
    assert_image_deleted(image, via=Via.WEB)
    # The cell leaves out importing: the page's upload and URL forms post nothing by themselves; their
    # script talks to the REST API (tus, then /api/images/import/), which Chromium drives in
    # tests/browser/test_images.py.
    assert "Uploading and importing need JavaScript." in listed.html
    forms = re.findall(r"<form [^>]*data-(?:upload|url)-form[^>]*>", listed.html)
    assert len(forms) == 2 and not [f for f in forms if "method=" in f or "action=" in f], forms


@claim("images", "REST API")
def api_images(test_host, alice, admin_user, image_source) -> None:
    api = api_client(alice)
    # Upload (tus): create, send the bytes in two PATCHes, then import the upload.
    created = tus_create(api, len(image_source.data))
    assert created.status_code == 201, created.content
    half = len(image_source.data) // 2
    assert tus_patch(api, created["Location"], 0, image_source.data[:half])["Upload-Offset"] == str(half)
    sent = tus_patch(api, created["Location"], half, image_source.data[half:])
    assert sent.status_code == 204 and sent["Upload-Offset"] == str(len(image_source.data))
    upload = created["Location"].rstrip("/").rsplit("/", 1)[1]
    imported = api.post("/api/images/import/", {"source": "upload", "upload": upload, "name": "from-upload"},
                        format="json")
    assert imported.status_code == 202, imported.content
    assert imported.json()["message"] == "Importing image from-upload; follow the job for its progress."
    assert_imported("from-upload", owner=alice, via=Via.API, source="upload disk.qcow2")
    # A URL, the portal downloads.
    imported = api.post("/api/images/import/", {"source": "url", "url": image_source.url, "name": "from-url",
                                                "sha256": hashlib.sha256(image_source.data).hexdigest()},
                        format="json")
    assert imported.status_code == 202, imported.content
    job = api.get(imported.json()["job"]["url"]).json()
    assert (job["status"], job["progress"], job["kind"]) == ("succeeded", 100, "image.import")
    image = assert_imported("from-url", owner=alice, via=Via.API, source=image_source.url)
    # A host file: administrators only, into the library.
    refused = api.post("/api/images/import/", {"source": "path", "path": str(image_source.path), "name": "host"},
                       format="json")
    assert refused.status_code == 403 and "Only administrators" in refused.json()["detail"]
    imported = api_client(admin_user).post("/api/images/import/", {"source": "path", "path": str(image_source.path),
                                                                   "name": "from-host"}, format="json")
    assert imported.status_code == 202, imported.content
    assert_imported("from-host", owner=None, via=Via.API, source=str(image_source.path))
    listed = {i["name"]: i for i in api.get("/api/images/").json()["results"]}
    assert {"from-upload", "from-url", "from-host", "test-blank"} <= set(listed)
    assert listed["from-url"]["checksum_sha256"] == image.checksum_sha256 and listed["from-url"]["owner"] == "alice"
    assert api.delete("/api/images/from-url/").status_code == 204
    assert_image_deleted(image, via=Via.API)
    assert "from-url" not in {i["name"] for i in api.get("/api/images/").json()["results"]}


@claim("images", "Slack", "list")
def slack_images(test_host, alice, link, slack, image_source) -> None:
    from chatops.commands import ParseError, parse

    linked_alice(alice, link)
    import_image(alice, image_source)
    said = slack_run(slack, "images")
    assert "*Images you can use* (2)" in said, said
    assert "💽 `from-url` — disk image · 2 MiB · yours" in said
    assert "`test-blank` — Blank (test driver) · disk image · 4 KiB · library ⭐ *default*" in said
    # The cell says only "list": images are added and deleted elsewhere, and the bot says where.
    assert "upload or import images in the portal>" in said
    for text in ("images import http://x/y.qcow2", "images delete from-url"):
        with pytest.raises(ParseError, match="for all the images you can use"):
            parse(text)
    assert Image.objects.filter(name="from-url").exists()


@claim("images", "CLI", "import (URL, host file), list, delete")
def cli_images(test_host, alice, admin_user, image_source) -> None:
    out = cli("image", "import", image_source.url, "--name", "from-url", "--wait")
    assert "Importing image from-url." in out and "succeeded 100% Done" in out, out
    image = assert_imported("from-url", owner=alice, via=Via.CLI, source=image_source.url)
    assert cli_error("image", "import", str(image_source.path), "--name", "host")[0] == 4  # administrators only
    out = cli("image", "import", str(image_source.path), "--name", "from-host", "--wait", user=admin_user.username)
    assert "Importing image from-host." in out and "succeeded 100% Done" in out, out
    assert_imported("from-host", owner=None, via=Via.CLI, source=str(image_source.path))
    listed = [line.split() for line in cli("image", "list").splitlines()]
    assert [str(image.pk), "from-url", "disk", "qcow2", "0.00", "GiB", "private", "alice"] in listed, listed
    assert {"from-host", "test-blank"} <= {line[1] for line in listed}
    assert cli("image", "delete", "from-url").strip() == "Deleted image from-url and its stored file."
    assert_image_deleted(image, via=Via.CLI)


@claim("images", "Admin", "import (URL, host file), change, delete")
def admin_images(test_host, alice, admin_user, image_source) -> None:
    admin = Browser(admin_user)
    add = "/admin/storage/image/add/"
    assert "Add image" in admin.get("/admin/storage/image/").text
    for name, source in (("from-url", image_source.url), ("from-host", str(image_source.path))):
        page = admin.submit(admin.get(add), action=add, source=source, name=name, title=name)
        assert f"Importing image {name}; its progress is shown on the job's page." in page.text, page.text
        assert page.text.startswith(f"image.import {name} (succeeded)")  # the job's page
        image = assert_imported(name, owner=None, via=Via.ADMIN, source=source)
    change = f"/admin/storage/image/{image.pk}/change/"
    page = admin.submit(admin.get(change), action=change, button="_save", title="Host disk")
    assert "was changed successfully" in page.text, page.text
    image.refresh_from_db()
    assert image.title == "Host disk"
    assert AuditEvent.objects.filter(action="image.update", via=Via.ADMIN, target_id=str(image.pk)).exists()
    changelist = "/admin/storage/image/"
    confirm = admin.submit(admin.get(changelist), action=changelist,
                           data={"action": "delete_selected", "_selected_action": str(image.pk)})
    assert "Are you sure" in confirm.text
    page = admin.submit(confirm, action=changelist)
    assert "Deleted image from-host and its base volume." in page.text, page.text
    assert_image_deleted(image, via=Via.ADMIN)


# === Templates: make one from a stopped VM, create VMs from it (thin or full) ===========================
# alice's stopped web-1 is sealed into the template web-gold (its sizes as the defaults); web-2 is made
# from it as a thin clone (a qcow2 overlay on the template's volume) and web-3 as a full copy.

TEMPLATE = "web-gold"


def template_made(owner) -> Image:
    """Set-up, not under test: the owner's web-1, stopped, sealed into web-gold through the service."""
    from vms.services import vm_template_create

    vm_template_create(actor=owner, via=Via.SYSTEM, vm=force_off(make_vm(owner)), name=TEMPLATE)
    return Image.objects.get(name=TEMPLATE)


def assert_template(vm: VM, *, via: str) -> Image:
    """The template made of the VM through a door: alice's, with the VM's sizes; the job and audit rows."""
    from django.conf import settings

    image = Image.objects.get(name=TEMPLATE)
    assert (image.kind, image.owner, image.source) == ("template", vm.owner, f"vm:{vm.name}")
    assert (image.default_vcpus, image.default_memory_mib, image.size_bytes) == (1, 128, 1024**3)
    assert image.volume_name in {v.name for v in libvirt().list_volumes(pool=settings.STORAGE_POOL)}
    job_of(vm, "vm.template", via=via)
    audited(vm, "vm.template", via=via)
    audited(vm, "vm.templated", via=via)
    assert_vm(vm, VMStatus.STOPPED, PowerState.SHUTOFF)  # the VM is as it was
    return image


def assert_clones(owner, template: Image, *, via: str) -> None:
    """web-2, a thin clone of the template, and web-3, a full copy: running, with the template's sizes."""
    thin = assert_created(owner, via=via, name="web-2").disks.get(target="vda").volume
    full = assert_created(owner, via=via, name="web-3").disks.get(target="vda").volume
    assert (thin.backing_image, thin.copy_of) == (template, None)
    assert (full.backing_image, full.copy_of) == (None, template)
    for name in ("web-2", "web-3"):
        vm = VM.objects.get(owner=owner, name=name)
        assert (vm.image, vm.vcpus, vm.memory_mib, vm.disk_gib) == (template, 1, 128, 1)


@claim("templates", "Web")
def web_templates(test_host, alice) -> None:
    vm = force_off(make_vm(alice))
    browser = Browser(alice)
    detail = f"/vms/{vm.pk}/"
    page = browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/template/", name=TEMPLATE)
    job = job_of(vm, "vm.template", via=Via.WEB)
    assert f"Making template web-gold; it is listed among the images once the job {job.pk} has finished." in page.text
    template = assert_template(vm, via=Via.WEB)
    for name, clone in (("web-2", "thin"), ("web-3", "full")):
        form = browser.get("/vms/new/", image=str(template.pk))
        page = browser.submit(form, action="/vms/new/", name=name, flavor="custom", clone=clone,
                              vcpus="", memory_mib="", disk_gib="")
        assert f"Creating {name}." in page.text
    assert_clones(alice, template, via=Via.WEB)


@claim("templates", "REST API")
def api_templates(test_host, alice) -> None:
    vm = force_off(make_vm(alice))
    api = api_client(alice)
    made = api.post(f"/api/vms/{vm.pk}/template/", {"name": TEMPLATE}, format="json")
    assert made.status_code == 202 and made.json()["message"] == "Making template web-gold of web-1.", made.content
    template = assert_template(vm, via=Via.API)
    assert api.get(f"/api/images/{TEMPLATE}/").json()["kind"] == "template"
    for name, clone in (("web-2", "thin"), ("web-3", "full")):
        created = api.post("/api/vms/", {"name": name, "image": TEMPLATE, "clone": clone}, format="json")
        assert created.status_code == 202 and created.json()["message"] == f"Creating {name}.", created.content
    assert_clones(alice, template, via=Via.API)


@claim("templates", "Slack", "create")
def slack_templates(test_host, alice, link, slack) -> None:
    from chatops.commands import ParseError, parse

    linked_alice(alice, link)
    template = template_made(alice)
    said = slack_run(slack, "create web-2 image=web-gold")
    assert "<@UALICE> is creating *web-2* (1 vCPU · 128 MiB · 1 GiB · web-gold)" in said, said
    said = slack_run(slack, "create web-3 --image web-gold clone=full")
    assert "<@UALICE> is creating *web-3* (1 vCPU · 128 MiB · 1 GiB · web-gold)" in said, said
    assert_clones(alice, template, via=Via.SLACK)
    # The cell says only "create": templates are made in the portal, not in Slack.
    for text in ("template web-1 web-gold", "make-template web-1 web-gold"):
        with pytest.raises(ParseError, match="Unknown command"):
            parse(text)


@claim("templates", "CLI")
def cli_templates(test_host, alice) -> None:
    vm = force_off(make_vm(alice))
    out = cli("--wait", "template", NAME, "--name", TEMPLATE)
    assert "Making template web-gold of web-1." in out and "succeeded 100% Done" in out, out
    template = assert_template(vm, via=Via.CLI)
    assert cli("--wait", "create", "web-2", "--image", TEMPLATE).startswith("Creating web-2.")
    assert cli("--wait", "create", "web-3", "--image", TEMPLATE, "--clone", "full").startswith("Creating web-3.")
    assert_clones(alice, template, via=Via.CLI)


@claim("templates", "Admin", "view")
def admin_templates(test_host, alice, admin_user) -> None:
    from vms.services import vm_create

    template = template_made(alice)
    vm_create(actor=alice, via=Via.SYSTEM, name="web-2", image=TEMPLATE)
    vm_create(actor=alice, via=Via.SYSTEM, name="web-3", image=TEMPLATE, clone="full")
    admin = Browser(admin_user)
    listed = admin.get("/admin/storage/image/", kind__exact="template")
    assert "web-gold web-gold" in listed.text and "Template Owner only alice" in listed.text, listed.text
    assert f"backing_image__id__exact={template.pk}" in listed.html  # its thin clones' disks
    assert f"copy_of__id__exact={template.pk}" in listed.html  # its full copies' disks
    page = admin.get(f"/admin/storage/image/{template.pk}/change/")
    assert "Kind: Template Owner: Blank: the library the administrators keep. alice" in page.text, page.text
    assert "Default vcpus: Templates: the VM's vCPUs. 1 Default memory mib: Templates: the VM's memory. 128" in page.text
    assert "Thin clones: 1 Full copies: 1" in page.text and "vm:web-1" in page.text
    # View only, as the cell says: no admin action makes a template or a VM from one with a choice of clone.
    actions = django_admin.site._registry[VM].get_actions(page.response.wsgi_request)
    assert not [name for name in actions if "template" in name], sorted(actions)
    assert not [name for form in admin.get("/admin/vms/vm/add/").forms for name in form.values if "clone" in name]


# === CD-ROM: insert / eject an ISO ======================================================================
# An ISO (an ISO 9660 file registered through the service) goes into a stopped VM's drive and out again:
# the VM gets the drive, the record and libvirt's definition hold the ISO, then an empty tray.

def an_iso(host) -> Image:
    """Set-up, not under test: the public ISO `installer`."""
    return register_iso(host, "installer")


def assert_cdrom(vm: VM, iso: Image | None, *, via: str) -> None:
    """The VM's drive holds `iso` (None: empty) in the database and in libvirt's definition; the job and
    both audit rows of the change through `via`."""
    vm.refresh_from_db()
    assert (vm.cdrom_drive, vm.cdrom) == (True, iso)
    assert [c.path for c in libvirt().domain_cdroms(str(vm.uuid), inactive=True)] == [iso.path if iso else None]
    op, done = ("insert", "inserted") if iso else ("eject", "ejected")
    job_of(vm, f"vm.cdrom.{op}", via=via)
    audited(vm, f"vm.cdrom.{op}", via=via)
    audited(vm, f"vm.cdrom.{done}", via=via)


@claim("cdrom", "Web")
def web_cdrom(test_host, alice) -> None:
    iso = an_iso(test_host)
    vm = force_off(make_vm(alice))
    browser = Browser(alice)
    detail = f"/vms/{vm.pk}/"
    assert "No CD-ROM drive." in browser.get(detail).text
    page = browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/cdrom/", image="installer")
    assert "Inserting installer into web-1." in page.text
    assert_cdrom(vm, iso, via=Via.WEB)
    assert "Installer installer" in browser.get(f"/vms/{vm.pk}/cdrom/").text  # the panel, as live.js reloads it
    page = browser.submit(browser.get(detail), action=f"/vms/{vm.pk}/cdrom/eject/")
    assert "Ejecting installer from web-1." in page.text
    assert_cdrom(vm, None, via=Via.WEB)


@claim("cdrom", "REST API")
def api_cdrom(test_host, alice) -> None:
    iso = an_iso(test_host)
    vm = force_off(make_vm(alice))
    api = api_client(alice)
    url = api.get(f"/api/vms/{vm.pk}/").json()["cdrom_url"]
    inserted = api.post(url, {"image": "installer"}, format="json")
    assert inserted.status_code == 202, inserted.content
    assert inserted.json()["message"] == "Inserting installer into web-1." and inserted.json()["vm"]["cdrom"] == "installer"
    assert_cdrom(vm, iso, via=Via.API)
    ejected = api.delete(url)
    assert ejected.status_code == 202 and ejected.json()["message"] == "Ejecting installer from web-1."
    assert ejected.json()["vm"]["cdrom"] is None
    assert_cdrom(vm, None, via=Via.API)


@claim("cdrom", "CLI")
def cli_cdrom(test_host, alice) -> None:
    iso = an_iso(test_host)
    vm = force_off(make_vm(alice))
    out = cli("--wait", "cdrom", NAME, "--insert", "installer")
    assert "Inserting installer into web-1." in out and "succeeded 100% Done" in out, out
    assert_cdrom(vm, iso, via=Via.CLI)
    assert "cdrom installer" in [" ".join(line.split()) for line in cli("show", NAME).splitlines()]
    out = cli("--wait", "cdrom", NAME, "--eject")
    assert "Ejecting installer from web-1." in out and "succeeded 100% Done" in out, out
    assert_cdrom(vm, None, via=Via.CLI)
    assert "cdrom (empty)" in [" ".join(line.split()) for line in cli("show", NAME).splitlines()]


@claim("cdrom", "Admin", "view")
def admin_cdrom(test_host, alice, admin_user) -> None:
    from vms.services import vm_cdrom_insert

    an_iso(test_host)
    vm = force_off(make_vm(alice))
    vm_cdrom_insert(actor=alice, via=Via.SYSTEM, vm=vm, image="installer")
    admin = Browser(admin_user)
    page = admin.get(f"/admin/vms/vm/{vm.pk}/change/")
    assert "Installer installer" in page.text and "boots from CD first" in page.text, page.text
    # View only, as the cell says: the media is not a field of the form, and no action changes it.
    [form] = [f for f in page.forms if f.id == "vm_form"]
    assert not [name for name in form.values if "cdrom" in name], sorted(form.values)
    actions = django_admin.site._registry[VM].get_actions(page.response.wsgi_request)
    assert not [name for name in actions if "cdrom" in name or "eject" in name or "insert" in name], sorted(actions)


# === Adopt / release a domain made outside the portal ====================================================
# Set-up, not under test: a domain defined and started through the gateway with no portal metadata, as
# virsh would leave it (its disk a volume of the portal's pool), listed as foreign by a reconcile. Each door
# adopts it for alice (running, the same domain, the portal's metadata written into it) and releases it
# (the portal forgets it; the domain keeps running and is foreign again). The QEMU process staying the same
# is proven on qemu:///system in tests/vms/test_adoption_qemu.py.

def foreign_domain(host) -> DomainSpec:
    from cluster.services import host_sync

    spec = define_foreign()
    host_sync(host=host)
    assert ForeignDomain.objects.filter(host=host, uuid=spec.uuid).exists()
    return spec


def assert_adopted(spec: DomainSpec, owner, *, via: str) -> VM:
    from django.conf import settings

    vm = assert_vm(VM.objects.get(uuid=spec.uuid), VMStatus.RUNNING, PowerState.RUNNING)
    assert (vm.owner, vm.name, vm.domain_name, vm.disk_gib) == (owner, "legacy-web", spec.name, 2)
    assert vm.adopted_at is not None and vm.disks.get().volume.path == spec.disks[0].path
    assert libvirt().domain_info(spec.uuid).metadata["instance"] == settings.INSTANCE_ID
    assert not ForeignDomain.objects.filter(uuid=spec.uuid).exists()
    assert audited(vm, "vm.adopt", via=via).data["owner"] == owner.username
    return vm


def assert_released(spec: DomainSpec, vm_id: int, *, via: str) -> None:
    from django.conf import settings

    assert not VM.objects.filter(pk=vm_id).exists()
    info = libvirt().domain_info(spec.uuid)
    assert info.state == PowerState.RUNNING and not info.metadata  # untouched, and no longer the portal's
    volumes = {v.path for v in libvirt().list_volumes(pool=settings.STORAGE_POOL)}
    assert spec.disks[0].path in volumes  # its disk too
    assert ForeignDomain.objects.filter(uuid=spec.uuid).exists()
    assert AuditEvent.objects.filter(action="vm.release", via=via, target_id=str(vm_id)).exists()


@claim("adoption", "REST API")
def api_adoption(test_host, alice, admin_user) -> None:
    spec = foreign_domain(test_host)
    api = api_client(admin_user)
    [listed] = [d for d in api.get("/api/foreign-domains/").json()["results"] if d["uuid"] == spec.uuid]
    assert (listed["uuid"], listed["name"]) == (spec.uuid, spec.name), listed
    refused = api_client(alice).post(f"/api/foreign-domains/{spec.uuid}/adopt/", {"owner": "alice"}, format="json")
    assert refused.status_code == 403 and not VM.objects.exists()
    adopted = api.post(f"/api/foreign-domains/{spec.uuid}/adopt/", {"owner": "alice"}, format="json")
    assert adopted.status_code == 201, adopted.content
    body = adopted.json()
    assert body["message"].startswith(f"Adopted {spec.name} as legacy-web for alice"), body["message"]
    assert "deletes its volumes" in body["delete_note"] and body["vm"]["status"] == "running"
    vm = assert_adopted(spec, alice, via=Via.API)
    released = api.post(f"/api/vms/{vm.pk}/release/", {"reason": "back to virsh"}, format="json")
    assert released.status_code == 200 and released.json()["message"].startswith("Released legacy-web"), released.content
    assert_released(spec, vm.pk, via=Via.API)


@claim("adoption", "CLI")
def cli_adoption(test_host, alice, admin_user) -> None:
    spec = foreign_domain(test_host)
    admin = admin_user.username
    out = cli("adopt", test_host.name, spec.name, "--owner", "alice", user=admin)
    assert f"Adopted {spec.name} as legacy-web for alice" in out and "Delete powers it off" in out, out
    vm = assert_adopted(spec, alice, via=Via.CLI)
    assert cli_error("release", "legacy-web")[0] == 4  # administrators only
    out = cli("release", "legacy-web", "--reason", "back to virsh", user=admin)
    assert out.startswith("Released legacy-web"), out
    assert_released(spec, vm.pk, via=Via.CLI)


@claim("adoption", "Admin")
def admin_adoption(test_host, alice, admin_user) -> None:
    spec = foreign_domain(test_host)
    found = ForeignDomain.objects.get(uuid=spec.uuid)
    admin = Browser(admin_user)
    listed = admin.get("/admin/cluster/foreigndomain/")
    assert spec.name in listed.text and "Adopt the selected domain" in listed.text
    adopt = f"/admin/cluster/foreigndomain/{found.pk}/adopt/"
    page = admin.get(adopt)
    assert "deletes its volumes" in page.text and "sda (scsi)" in page.text, page.text
    page = admin.submit(page, action=adopt, owner=str(alice.pk))
    vm = assert_adopted(spec, alice, via=Via.ADMIN)
    assert page.url == f"/admin/vms/vm/{vm.pk}/change/"
    assert f"Adopted {spec.name} as legacy-web for alice" in page.text, page.text
    changelist = "/admin/vms/vm/"
    page = admin.submit(admin.get(changelist), action=changelist,
                        data={"action": "release", "_selected_action": str(vm.pk)})
    assert "Released legacy-web" in page.text, page.text
    assert_released(spec, vm.pk, via=Via.ADMIN)


# === the tests ======================================================================================

def test_the_table_and_the_checks_agree() -> None:
    """Every claim of the table has a check, and every check proves a claim the table makes."""
    cells = {(c.row, c.door, c.text) for c in CLAIMS}
    unchecked = sorted(cells - set(CHECKS))
    unclaimed = sorted(set(CHECKS) - cells)
    assert not (unchecked or unclaimed), (
        f"README.md claims cells that {Path(__file__).name} does not check: {unchecked}; "
        f"and checks prove cells that README.md leaves empty or words differently: {unclaimed}")


@pytest.mark.parametrize("cell", CLAIMS, ids=[cell.id for cell in CLAIMS])
def test_the_readme_claim_holds(cell: Cell, request: pytest.FixtureRequest) -> None:
    """The README's cell is true through its door (see the check registered for it above)."""
    check = CHECKS.get((cell.row, cell.door, cell.text))
    if check is None:
        pytest.fail(f"README.md claims {cell.text!r} for {ROWS.get(cell.row, cell.row)!r} through "
                    f"{cell.door}, and nothing checks it: add a check with @claim(...)")
    check(**{name: request.getfixturevalue(name) for name in inspect.signature(check).parameters})
