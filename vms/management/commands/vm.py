"""Manage VMs from the command line, through the same services as the web, API and Slack.

Errors go to stderr with an exit status per kind of error (`exit_code` on portal.exceptions'
classes; the table is in README.md, "Command line").
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from cluster.selectors import host_get
from portal.choices import Via
from portal.exceptions import NotFound, PortalError, ValidationFailed, user_message
from portal.jobs import job_wait
from portal.models import Job
from portal.units import filesize
from quotas.selectors import quota_usage
from storage.cli import add_image_verbs, run_image_verb
from vms import adoption, disk_doors, disks, lifecycle, selectors, services
from vms.bulk import BULK_JOB, vm_bulk_create
from vms.lease_policy import fmt_when
from vms.leases import vm_lease_extend, vm_lease_set
from vms.migration import vm_migrate
from vms.scheduling import vm_scheduling_update

# Verbs that apps above vms add (consoles: `console`), registered from their AppConfig.ready, so this
# command never imports them: name -> (help, add_arguments(parser), run(command, actor, vm, options)).
_extra_verbs: dict[str, tuple[str, Callable[[Any], None], Callable[..., None]]] = {}


def register_verb(name: str, *, help: str, add_arguments: Callable[[Any], None],
                  run: Callable[..., None]) -> None:
    """Add a `manage.py vm` verb that acts on one VM (`add_arguments` must add its `name` argument)."""
    _extra_verbs[name] = (help, add_arguments, run)


# --- verbs that name no VM (backups: `restore BACKUP_ID`, `backups [NAME]`) (issue #11) ---
_vmless_verbs: set[str] = set()


def register_vmless_verb(name: str, *, help: str, add_arguments: Callable[[Any], None],
                         run: Callable[..., None]) -> None:
    """Like register_verb, for a verb whose arguments name no VM (or look it up themselves):
    `run(command, actor, None, options)`."""
    _vmless_verbs.add(name)
    register_verb(name, help=help, add_arguments=add_arguments, run=run)


@dataclass(frozen=True)
class _Outcome:
    """What a verb printed and the job it queued (like vms.services.ActionResult)."""

    message: str
    job: Job | None


def networks_option(values: list[str] | None) -> list[str] | None:
    """`--net` as vm_create takes it: None (not given: the default network), [] (`--net none`: no NIC),
    or the names, from repeated options and/or commas."""
    if not values:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if [n.lower() for n in names] == ["none"]:
        return []
    if "none" in (n.lower() for n in names):
        raise ValidationFailed("--net none means no NIC at all: give it alone.", field="networks")
    return names


def _properties_option(values: list[str] | None) -> dict[str, str]:
    """`KEY=VALUE` arguments as a properties mapping (`KEY=` removes one); the service validates them."""
    props: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationFailed(f"{item!r}: give properties as KEY=VALUE (KEY= removes one).", field="properties")
        props[key.strip()] = value.strip()
    return props


def _add_disk_verbs(parser) -> None:
    """`vm disk list|add|remove|grow|set NAME …`, `vm disk volumes`, `vm disk delete VOLUME`."""
    sub = parser.add_subparsers(dest="disk_verb", required=True)
    sub.add_parser("list", help="The VM's disks: id, target, bus, size, label, flags, status, properties.") \
        .add_argument("name")
    add = sub.add_parser("add", help="Add a new blank disk (--size) or attach a data disk (--volume); "
                                     "hot-plugged while the VM runs.")
    add.add_argument("name")
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--size", metavar="GIB", help="A new blank disk of this size in GiB.")
    what.add_argument("--volume", metavar="ID|LABEL", help="Attach this existing data disk.")
    add.add_argument("--bus", default="virtio", help="virtio (virtio-blk, default) or scsi (virtio-SCSI).")
    add.add_argument("--label", default="", help="New disks: the name you know it by.")
    add.add_argument("--readonly", action="store_true", help="The guest may only read it.")
    add.add_argument("--shareable", action="store_true",
                     help="New disks: may be attached read-only to several VMs at once.")
    add.add_argument("--storage-domain", "--pool", dest="pool", default=None, metavar="DOMAIN",
                     help="New disks: the storage domain (default: the host's; --pool is its old name).")
    add.add_argument("--set", dest="props", action="append", metavar="KEY=VALUE", help="A device property "
                                                                                       "(repeatable).")
    remove = sub.add_parser("remove", help="Detach a data disk (--delete: and delete it).")
    remove.add_argument("name")
    remove.add_argument("disk", metavar="ID|TARGET|LABEL")
    remove.add_argument("--delete", action="store_true", help="Also delete the disk and its data.")
    grow = sub.add_parser("grow", help="Grow a disk (never shrinks); live while the VM runs.")
    grow.add_argument("name")
    grow.add_argument("disk", metavar="ID|TARGET|LABEL")
    grow.add_argument("size_gib", help="New size in GiB.")
    dset = sub.add_parser("set", help="Set device properties: KEY=VALUE … (KEY= removes one).")
    dset.add_argument("name")
    dset.add_argument("disk", metavar="ID|TARGET|LABEL")
    dset.add_argument("props", nargs="+", metavar="KEY=VALUE")
    sub.add_parser("volumes", help="Your data disks and the VMs they are attached to.")
    sub.add_parser("delete", help="Delete a detached data disk.").add_argument("volume", metavar="ID|LABEL")
    for p in sub.choices.values():
        p.add_argument("--wait", action="store_true", default=argparse.SUPPRESS, help="Wait for the job to finish.")


WORKER_GRACE_SECONDS = 5.0  # --wait: how long a job may stay unclaimed before this command runs it

class Command(BaseCommand):
    help = ("VM lifecycle as a given user: list, show, create, start, stop, force-off, reboot, pause, resume, "
            "delete, grow-disk; disk list|add|remove|grow|set|volumes|delete; snapshot, snapshots, revert, delete-snapshot; nic-add, nic-remove; cdrom; template; "
            "adopt, release, migrate, set (administrators); image import|list|delete (the image library); and verbs "
            "other apps add (console: one-time console URLs).")

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="Act as this portal user.")
        parser.add_argument("--wait", action="store_true", help="Wait for the job to finish.")
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("list")
        sub.add_parser("quota")
        sub.add_parser("show", aliases=["info"], help="The VM, its NICs and its ssh line.").add_argument("name")
        for action, transition in lifecycle.ACTIONS.items():  # start, stop, force-off, …, delete
            sub.add_parser(action.replace("_", "-"), help=transition.help).add_argument("name")
        grow = sub.add_parser("grow-disk")
        grow.add_argument("name")
        grow.add_argument("disk_gib", help="New size in GiB (disks only grow).")
        snap = sub.add_parser("snapshot")
        snap.add_argument("name")
        snap.add_argument("snapshot", nargs="?", help="Snapshot name (default snap-<date>-<time>).")
        snap.add_argument("--description", default="")
        sub.add_parser("snapshots").add_argument("name")
        for name, (verb_help, add_verb_arguments, _) in _extra_verbs.items():
            add_verb_arguments(sub.add_parser(name, help=verb_help))
        for verb in ("revert", "delete-snapshot"):
            p = sub.add_parser(verb)
            p.add_argument("name")
            p.add_argument("snapshot")
        create = sub.add_parser("create")
        create.add_argument("name")
        create.add_argument("--image")
        create.add_argument("--flavor")
        create.add_argument("--vcpus")
        create.add_argument("--memory-mib")
        create.add_argument("--disk-gib")
        create.add_argument("--description", default="")
        create.add_argument("--net", action="append", dest="networks", metavar="NETWORK",
                            help="A NIC on this network (repeatable, or NAME,NAME); `--net none`: no NIC. "
                                 "Default: your default network, if any.")
        create.add_argument("--no-start", action="store_true")
        create.add_argument("--clone", choices=("thin", "full"), default=None,
                            help="thin (default): a qcow2 overlay on the image; full: a standalone copy of it.")
        create.add_argument("--storage-domain", default=None,  # storage domains (issue #11)
                            help="The data storage domain for the VM's disks (manage.py pool list).")
        create.add_argument("--lease", default=None, metavar="DAYS",  # leases (issue #14)
                            help="Lease in days (7 or 7d; 0 or none: no lease). Default: the group's default lease.")
        create.add_argument("--expires", default=None, metavar="DATE",
                            help="Or the lease's end: an ISO date or date-time.")
        template = sub.add_parser("template", help="Seal a stopped VM into a template (an image with its sizes).")
        template.add_argument("name")
        _add_bulk_arguments(sub.add_parser(
            "bulk-create", help="Create COUNT VMs named by PATTERN (e.g. lab-{n:02}) from one image or template, "
                                "with one parent job (issue #14)."))
        template.add_argument("--name", dest="template_name", required=True, metavar="TEMPLATE",
                              help="The template's (image) name.")
        template.add_argument("--title", default="")
        template.add_argument("--description", default="")
        template.add_argument("--visibility", default="private", help="private (default), group or public.")
        template.add_argument("--group", action="append", dest="groups", default=[], metavar="GROUP",
                              help="A group that may use it (visibility group); repeat for more.")
        template.add_argument("--library", action="store_true",
                              help="Administrators: a library template (no owner, no quota).")
        add_image_verbs(sub.add_parser("image", help="The image library: import (a job), list, delete "
                                                     "(same as `manage.py image`)."))
        nic_add = sub.add_parser("nic-add", help="Add a NIC on a network (hot-plugged while the VM runs).")
        nic_add.add_argument("name")
        nic_add.add_argument("network")
        nic_add.add_argument("--model", default="virtio", help="virtio (default), e1000 or rtl8139.")
        nic_add.add_argument("--mac", default=None, help="Default: a new 52:54:00:… address.")
        adopt = sub.add_parser("adopt", help="Administrators: make a domain created outside the portal a VM of "
                                             "--owner, without restarting it.")
        adopt.add_argument("host", help="The host's name or id.")
        adopt.add_argument("domain", metavar="UUID_OR_NAME", help="The foreign domain's UUID or name.")
        adopt.add_argument("--owner", required=True, help="Username of the new owner.")
        adopt.add_argument("--group", default=None, help="Team (group) name: its quota is charged.")
        adopt.add_argument("--name", dest="vm_name", default=None, help="The VM's name (default: from the domain).")
        adopt.add_argument("--reason", default="", help="Adopt even beyond the quota; the reason goes in the audit log.")
        release = sub.add_parser("release", help="Administrators: the portal forgets the VM; its domain and disks "
                                                 "stay on the host as they are.")
        release.add_argument("name")
        release.add_argument("--reason", default="", help="Why (written in the audit log).")
        migrate = sub.add_parser("migrate", help="Administrators: live-migrate a running VM to --host, or to the "
                                                 "best host of its cluster.")
        migrate.add_argument("name")
        migrate.add_argument("--host", default=None, help="The destination host's name or id (default: the best "
                                                          "host the cluster's scheduler picks).")
        migrate.add_argument("--reason", default="", help="Why (written in the audit log).")
        vm_set = sub.add_parser("set", help="Administrators: the VM's scheduling settings — HA, HA priority, "
                                            "pinned hosts, required host tags (apply at its next placement).")
        vm_set.add_argument("name")
        vm_set.add_argument("--ha", dest="ha", action=argparse.BooleanOptionalAction, default=None,
                            help="--ha: restart it on another host when its host is confirmed down; --no-ha: don't.")
        vm_set.add_argument("--ha-priority", default=None, metavar="N", help="HA restart order, 0–100 (higher first).")
        pin = vm_set.add_mutually_exclusive_group()
        pin.add_argument("--pin", default=None, metavar="HOST[,HOST]", help="Run only on these hosts of its cluster.")
        pin.add_argument("--unpin", action="store_true", help="Any host of its cluster again.")
        tags = vm_set.add_mutually_exclusive_group()
        tags.add_argument("--tags", default=None, metavar="TAG[,TAG]",
                          help="Host tags the VM needs (only hosts with all of them take it).")
        tags.add_argument("--no-tags", action="store_true", help="Require no tags.")
        nic_remove = sub.add_parser("nic-remove", help="Remove a NIC, given by its MAC or its id.")
        nic_remove.add_argument("name")
        nic_remove.add_argument("nic", metavar="MAC|ID")
        cdrom = sub.add_parser("cdrom", help="Insert an ISO into the VM's CD-ROM drive (a stopped VM without one "
                                             "gets one) or eject it; the VM boots from CD first while one is in.")
        cdrom.add_argument("name")
        media = cdrom.add_mutually_exclusive_group(required=True)
        media.add_argument("--insert", metavar="ISO", help="An ISO image you may use, by name or id.")
        media.add_argument("--eject", action="store_true", help="Empty the drive: the VM boots from its disk.")
        _add_disk_verbs(sub.add_parser("disk", help="A VM's disks: list, add (new or an existing data disk), "
                                                    "remove (detach, --delete), grow, set properties; "
                                                    "volumes (your data disks), delete (a detached one)."))
        # `--wait` after the subcommand too (`create web-1 --flavor tiny --wait`). SUPPRESS: a subcommand
        # given without it must not reset a `--wait` given before it.
        for verb_parser in {id(p): p for p in sub.choices.values()}.values():  # aliases share a parser
            verb_parser.add_argument("--wait", action="store_true", default=argparse.SUPPRESS,
                                     help="Wait for the job to finish.")

    def handle(self, *args, user: str, verb: str, wait: bool, **opts):
        actor = get_user_model().objects.filter(username=user).first()
        if actor is None:
            raise CommandError(f"No user {user!r}.", returncode=NotFound.exit_code)
        try:
            result = self._run(actor, verb, opts)
        except PortalError as exc:
            raise CommandError(user_message(exc, user=actor), returncode=exc.exit_code) from None
        if result is None:
            return
        self.stdout.write(result.message)
        if result.job is not None:
            self.stdout.write(f"job {result.job.pk}")
            if wait:
                self._wait(result.job)

    def _run(self, actor, verb, opts):
        if verb == "list":
            for vm in selectors.vm_list(user=actor):
                self.stdout.write(f"{vm.pk:>5}  {vm.name:<24} {vm.status:<10} {vm.vcpus} vCPU  "
                                  f"{vm.memory_mib} MiB  {vm.disk_gib} GiB  {vm.host.name}")
            return None
        if verb == "quota":
            for u in quota_usage(user=actor):
                self.stdout.write(f"{u.label:<8} {u.used:>6} / {u.limit:<6} {u.unit}")
            return None
        if verb == "image":
            outcome = run_image_verb(actor, opts, self.stdout.write)
            return None if outcome is None else _Outcome(outcome.message, outcome.job)
        if verb == "create":
            return services.vm_create(
                actor=actor, via=Via.CLI, name=opts["name"], image=opts["image"], flavor=opts["flavor"],
                vcpus=opts["vcpus"], memory_mib=opts["memory_mib"], disk_gib=opts["disk_gib"],
                description=opts["description"], start=not opts["no_start"],
                networks=networks_option(opts["networks"]), clone=opts["clone"],
                storage_domain=opts.get("storage_domain"), lease_days=opts["lease"], expires_at=opts["expires"])
        if verb == "bulk-create":
            return self._bulk(actor, opts)
        if verb == "adopt":
            host = host_get(name_or_id=opts["host"])
            fd = adoption.foreign_domain_get(host=host, key=opts["domain"])
            vm = adoption.vm_adopt(actor=actor, via=Via.CLI, host=host, uuid=fd.uuid, owner=opts["owner"],
                                   group=opts["group"], name=opts["vm_name"], override_reason=opts["reason"])
            return _Outcome(f"Adopted {fd.name} as {vm.name} for {vm.owner.get_username()}, without restarting it.\n"
                            f"{adoption.vm_delete_note(vm=vm)}", None)
        if verb == "disk":
            return self._disk(actor, opts)
        if verb in _vmless_verbs:  # issue #11: verbs that look up what they act on themselves
            return _extra_verbs[verb][2](self, actor, None, opts)
        vm = selectors.vm_get_by_name(user=actor, name=opts["name"])
        if verb == "release":
            adoption.vm_release(actor=actor, via=Via.CLI, vm=vm, reason=opts["reason"])
            return _Outcome(f"Released {vm.name}: the portal forgot it; domain {vm.domain_name} and its disks stay "
                            f"on {vm.host.name}.", None)
        if verb == "set":
            return self._set(actor, vm, opts)
        if verb == "migrate":
            return vm_migrate(actor=actor, via=Via.CLI, vm=vm, host=opts["host"], reason=opts["reason"])
        if verb in ("show", "info"):
            self._show(vm)
            return None
        if verb == "nic-add":
            nic, job, message = services.vm_nic_add(actor=actor, via=Via.CLI, vm=vm, network=opts["network"],
                                                    model=opts["model"], mac=opts["mac"])
            return _Outcome(f"{message} MAC {nic.mac}.", job)
        if verb == "nic-remove":
            _nic, job, message = services.vm_nic_remove(actor=actor, via=Via.CLI, vm=vm, nic=opts["nic"])
            return _Outcome(message, job)
        if verb == "cdrom":
            if opts["eject"]:
                return services.vm_cdrom_eject(actor=actor, via=Via.CLI, vm=vm)
            return services.vm_cdrom_insert(actor=actor, via=Via.CLI, vm=vm, image=opts["insert"])
        if verb in _extra_verbs:
            return _extra_verbs[verb][2](self, actor, vm, opts)
        if verb == lifecycle.DELETE.action:
            return services.vm_delete(actor=actor, via=Via.CLI, vm=vm)
        if verb == "template":
            job = services.vm_template_create(
                actor=actor, via=Via.CLI, vm=vm, name=opts["template_name"], title=opts["title"],
                description=opts["description"], visibility=opts["visibility"], groups=opts["groups"],
                library=opts["library"])
            return _Outcome(f"Making template {opts['template_name']} of {vm.name}.", job)
        if verb == "grow-disk":
            return services.vm_grow_disk(actor=actor, via=Via.CLI, vm=vm, disk_gib=opts["disk_gib"])
        if verb == "snapshots":
            for snap in selectors.vm_snapshots(vm=vm):
                holds = "disks+memory" if snap.has_memory else "disks"
                when = snap.taken_at or snap.created_at
                self.stdout.write(f"{snap.name:<32} {snap.status:<10} {holds:<13} {when:%Y-%m-%d %H:%M:%S}  "
                                  f"{filesize(snap.size_bytes) if snap.size_bytes else '-'}")
            return None
        # Snapshot results carry a message and a job too, like ActionResult.
        if verb == "snapshot":
            return services.snapshot_create(actor=actor, via=Via.CLI, vm=vm, name=opts["snapshot"],
                                            description=opts["description"])
        if verb == "revert":
            return services.snapshot_revert(actor=actor, via=Via.CLI, vm=vm, snapshot=opts["snapshot"])
        if verb == "delete-snapshot":
            return services.snapshot_delete(actor=actor, via=Via.CLI, vm=vm, snapshot=opts["snapshot"])
        return services.vm_action(actor=actor, via=Via.CLI, vm=vm, action=verb.replace("-", "_"))

    # --- disks (issue #11) ---------------------------------------------------------------------
    def _disk(self, actor, opts) -> _Outcome | None:
        """`vm disk …`: one vms.disks service per verb; `list` and `volumes` print tables."""
        action = opts["disk_verb"]
        if action == "volumes":
            for v in disk_doors.data_volumes(actor=actor):
                used = ", ".join(f"{a.vm.name}:{a.target}{'(ro)' if a.readonly else ''}"
                                 for a in v.attachments.all() if a.vm.deleted_at is None) or "detached"
                self.stdout.write(f"{v.pk:>5}  {v.label or v.name:<24} {v.capacity_gib:>5} GiB  "
                                  f"{'shareable' if v.shareable else '-':<9}  {used}")
            return None
        if action == "delete":
            _volume, job, message = disks.data_volume_delete(actor=actor, via=Via.CLI, volume=opts["volume"])
            return _Outcome(message, job)
        vm = selectors.vm_get_by_name(user=actor, name=opts["name"])
        if action == "list":
            for d in disk_doors.vm_disks(vm=vm):
                flags = ",".join(f for f, on in (("ro", d.readonly), ("shareable", d.volume.shareable)) if on) or "-"
                self.stdout.write(f"{d.pk:>5}  {d.target:<5} {d.bus:<6} {d.volume.capacity_gib:>5} GiB  "
                                  f"{d.volume.label or '-':<20} {flags:<12} {d.status:<10} "
                                  f"{disk_doors.properties_text(d.properties)}")
            return None
        if action == "add":
            _disk, job, message = disks.vm_disk_add(
                actor=actor, via=Via.CLI, vm=vm, size_gib=opts["size"], volume=opts["volume"], bus=opts["bus"],
                readonly=opts["readonly"], shareable=opts["shareable"], label=opts["label"], pool=opts["pool"],
                properties=_properties_option(opts["props"]) or None)
            return _Outcome(message, job)
        if action == "remove":
            _disk, job, message = disks.vm_disk_remove(actor=actor, via=Via.CLI, vm=vm, disk=opts["disk"],
                                                       delete_volume=opts["delete"])
            return _Outcome(message, job)
        if action == "grow":
            _disk, grow_job, message = disks.vm_disk_grow(actor=actor, via=Via.CLI, vm=vm, disk=opts["disk"],
                                                          size_gib=opts["size_gib"])
            return _Outcome(message, grow_job)
        # set
        _disk, set_job, message = disks.vm_disk_update(actor=actor, via=Via.CLI, vm=vm, disk=opts["disk"],
                                                       properties=_properties_option(opts["props"]))
        return _Outcome(message, set_job)

    def _set(self, actor, vm, opts) -> _Outcome:
        """`vm set`: vm_scheduling_update; prints what changed, the warnings, then the settings."""
        pinned = [] if opts["unpin"] else (None if opts["pin"] is None else opts["pin"].split(","))
        tags = [] if opts["no_tags"] else opts["tags"]
        result = vm_scheduling_update(actor=actor, via=Via.CLI, vm=vm, highly_available=opts["ha"],
                                      ha_priority=opts["ha_priority"], pinned_hosts=pinned, required_tags=tags)
        vm = result.vm
        pins = ", ".join(vm.pinned_hosts.order_by("name").values_list("name", flat=True)) or "any host of its cluster"
        lines = [result.message, *(f"warning: {w}" for w in result.warnings),
                 f"{'highly available':<17} {'yes' if vm.highly_available else 'no'}",
                 f"{'HA priority':<17} {vm.ha_priority}", f"{'pinned hosts':<17} {pins}",
                 f"{'required tags':<17} {', '.join(vm.required_tags or []) or 'none'}"]
        return _Outcome("\n".join(lines), None)

    def _show(self, vm) -> None:
        for field in ("pk", "uuid", "name", "status", "power_state", "vcpus", "memory_mib", "disk_gib",
                      "domain_name", "domain_type", "last_error", "expires_at"):
            self.stdout.write(f"{field:<12} {getattr(vm, field)}")
        nics = selectors.vm_nics(vm=vm)
        for nic in nics:  # one line each: network, MAC, model, state, address (blank until a lease is seen)
            self.stdout.write(f"{'nic ' + str(nic.pk):<12} {nic.network.name:<20} {nic.mac}  {nic.model:<8} "
                              f"{nic.status:<10} {nic.ip_address or '-'}")
        if not nics:
            self.stdout.write(f"{'nic':<12} none")
        if vm.cdrom_drive:
            self.stdout.write(f"{'cdrom':<12} {vm.cdrom.name if vm.cdrom else '(empty)'}")
        ssh = selectors.vm_ssh_command(vm=vm, nics=nics)
        self.stdout.write(f"{'ssh':<12} {ssh or '- (no address seen yet, or the image has no SSH login)'}")

    def _bulk(self, actor, opts) -> _Outcome:
        result = vm_bulk_create(
            actor=actor, via=Via.CLI, count=opts["count"], name_pattern=opts["pattern"],
            start_number=opts["start_number"], image=opts["image"], flavor=opts["flavor"], vcpus=opts["vcpus"],
            memory_mib=opts["memory_mib"], disk_gib=opts["disk_gib"], description=opts["description"],
            group=opts["group"], owner=opts["owner"], networks=networks_option(opts["networks"]),
            clone=opts["clone"], start=not opts["no_start"], partial=opts["partial"],
            idempotency_key=opts["idempotency_key"], lease_days=opts["lease"], expires_at=opts["expires"])
        names = ", ".join(vm.name for vm in result.vms)
        return _Outcome(result.message + (f"\n{names}" if names else ""), result.job)

    def _wait(self, job: Job) -> None:
        if job.kind == BULK_JOB:  # a batch: each child (run here when no worker takes it), then the parent
            for child in Job.objects.filter(parent=job).order_by("created_at"):
                job_wait(child, write=lambda line, name=child.target_name: self.stdout.write(f"{name}: {line}"),
                         grace_seconds=WORKER_GRACE_SECONDS)

        # A job no worker takes within the grace (the demo on the test driver has none) is run here.
        job = job_wait(job, write=self.stdout.write, grace_seconds=WORKER_GRACE_SECONDS)
        if job.status != "succeeded":
            raise CommandError(job.error or job.status, returncode=PortalError.exit_code)


def _add_bulk_arguments(bulk: Any) -> None:
    bulk.add_argument("pattern", help="Names: {n} is each VM's number, e.g. lab-{n:02} (lab-01, lab-02, ...).")
    bulk.add_argument("count", help="How many VMs.")
    bulk.add_argument("--start-number", default=1, help="The first number (default 1).")
    bulk.add_argument("--image")
    bulk.add_argument("--flavor")
    bulk.add_argument("--vcpus")
    bulk.add_argument("--memory-mib")
    bulk.add_argument("--disk-gib")
    bulk.add_argument("--description", default="")
    bulk.add_argument("--group", default=None, help="The team whose quota the VMs use.")
    bulk.add_argument("--owner", default=None, help="Administrators: create the VMs for this user.")
    bulk.add_argument("--net", action="append", dest="networks", metavar="NETWORK",
                      help="A NIC on this network (repeatable); `--net none`: no NIC.")
    bulk.add_argument("--no-start", action="store_true")
    bulk.add_argument("--clone", choices=("thin", "full"), default=None)
    bulk.add_argument("--partial", action="store_true",
                      help="Create as many as fit the quota and the hosts (default: all or nothing).")
    bulk.add_argument("--lease", default=None, metavar="DAYS",  # leases (issue #14), as `create`
                      help="Each VM's lease in days (7 or 7d; 0 or none: no lease). Default: the group's default.")
    bulk.add_argument("--expires", default=None, metavar="WHEN", help="Or the leases' end: an ISO date or date-time.")
    bulk.add_argument("--idempotency-key", default=None,
                      help="Run again with the same key: nothing new is created, the first job is shown.")


# --- NIC properties (issue #11) ------------------------------------------------------------------

def parse_property_options(values: list[str] | None, unset: list[str] | None) -> dict[str, object] | None:
    """`--prop NAME=VALUE` (repeatable) and `--unset NAME` as the properties a service takes."""
    out: dict[str, object] = {}
    for item in values or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValidationFailed(f"--prop takes NAME=VALUE, not {item[:40]!r}.", field="properties")
        out[name.strip()] = value.strip()
    for name in unset or ():
        out[name.strip()] = None
    return out or None


def _nic_set_arguments(parser: Any) -> None:
    parser.add_argument("name")
    parser.add_argument("nic", metavar="MAC|ID")
    parser.add_argument("--model", default=None, help="virtio, e1000 or rtl8139.")
    parser.add_argument("--prop", action="append", dest="props", metavar="NAME=VALUE",
                        help="A device property, e.g. boot_order=2 (repeatable; docs/storage.md).")
    parser.add_argument("--unset", action="append", default=[], metavar="NAME", help="Remove a property.")


def _nic_set(command: Command, actor: Any, vm: Any, opts: dict) -> _Outcome:
    nic, job, message = services.vm_nic_update(actor=actor, via=Via.CLI, vm=vm, nic=opts["nic"], model=opts["model"],
                                               properties=parse_property_options(opts["props"], opts["unset"]))
    props = " ".join(f"{k}={v}" for k, v in sorted((nic.properties or {}).items())) or "none"
    return _Outcome(f"{message}\nmodel {nic.model}, properties {props}", job)


register_verb("nic-set", help="Change a NIC's model and device properties (boot_order); they apply at the "
                              "VM's next start.", add_arguments=_nic_set_arguments, run=_nic_set)


# --- leases (issue #14) ---
def _extend_arguments(parser: Any) -> None:
    parser.add_argument("name")
    parser.add_argument("--days", default=None, help="Days to add (from the current end, or from now once expired).")
    parser.add_argument("--until", default=None, metavar="DATE", help="Or the new end: an ISO date or date-time.")
    parser.add_argument("--no-lease", action="store_true", help="Administrators: remove the lease.")


def _extend(command: Command, actor: Any, vm: Any, opts: dict) -> _Outcome:
    if opts["no_lease"]:
        vm = vm_lease_set(actor=actor, via=Via.CLI, vm=vm, expires_at=None)
        return _Outcome(f"The lease of {vm.name} is removed: it no longer expires.", None)
    vm = vm_lease_extend(actor=actor, via=Via.CLI, vm=vm, days=opts["days"], until=opts["until"])
    return _Outcome(f"The lease of {vm.name} now ends {fmt_when(vm.expires_at)}.", None)


register_verb("extend", help="Extend a VM's lease within its group's policy (administrators: any end, or "
                             "--no-lease).", add_arguments=_extend_arguments, run=_extend)
