"""Slack requests in, one service call each, Slack replies out.

`handle_command` answers a slash command (its return value is the 3-second acknowledgement);
`handle_action` handles a button click (acknowledged at once by the Bolt listener, answered through
the interaction's response_url). Handlers never wait for Slack: every post goes through
chatops.outbox and leaves after the acknowledgement. Services own their transactions; long work is
a Job, announced after the acknowledgement and followed up when it ends (chatops.notifications).
Domain errors are worded once, by `formatting.error_reply`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts.selectors import sshkey_list
from backups import selectors as backup_selectors
from backups import services as backup_services
from consoles.services import CONSOLE_LINK_KINDS, console_link_create
from networks.selectors import network_default_for, network_usable
from portal.audit import audit_context
from portal.choices import Via
from portal.exceptions import PortalError, ValidationFailed
from quotas.selectors import quota_request_pending, quota_request_summary, quota_usage
from quotas.services import (
    quota_request_approve,
    quota_request_create,
    quota_request_deny,
    quota_request_for_size,
)
from storage.selectors import image_list
from vms.bulk import vm_bulk_create
from vms.dashboard import host_capacity_for
from vms.lease_policy import fmt_when
from vms.leases import vm_lease_extend, vm_lease_set
from vms.migration import vm_migrate
from vms.selectors import vm_get_by_name, vm_list, vm_nics, vm_snapshot_get, vm_snapshots, vm_ssh_command
from vms.services import snapshot_create, snapshot_revert, vm_action, vm_create, vm_delete, vm_grow_disk

from . import commands as c
from . import formatting as f
from . import notifications, outbox, services, slack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlackContext:
    """Who asked, from where, and how to answer: never a display name for identity."""

    team_id: str
    slack_user_id: str
    slack_user_name: str = ""
    channel_id: str = ""
    channel_name: str = ""
    response_url: str = ""
    trigger_id: str = ""

    @classmethod
    def from_command(cls, body: dict[str, Any]) -> SlackContext:
        return cls(
            team_id=str(body.get("team_id") or ""),
            slack_user_id=str(body.get("user_id") or ""),
            slack_user_name=str(body.get("user_name") or "")[:100],
            channel_id=str(body.get("channel_id") or ""),
            channel_name=str(body.get("channel_name") or "")[:100],
            response_url=str(body.get("response_url") or ""),
            trigger_id=str(body.get("trigger_id") or ""),
        )

    @classmethod
    def from_action(cls, body: dict[str, Any]) -> SlackContext:
        user = body.get("user") or {}
        team = body.get("team") or {}
        channel = body.get("channel") or {}
        return cls(
            team_id=str(team.get("id") or user.get("team_id") or ""),
            slack_user_id=str(user.get("id") or ""),
            slack_user_name=str(user.get("username") or user.get("name") or "")[:100],
            channel_id=str(channel.get("id") or (body.get("container") or {}).get("channel_id") or ""),
            channel_name=str(channel.get("name") or "")[:100],
            response_url=str(body.get("response_url") or ""),
            trigger_id=str(body.get("trigger_id") or ""),
        )

    def audit_data(self) -> dict[str, str]:
        data = {"slack_team": self.team_id, "slack_user": self.slack_user_id, "slack_channel": self.channel_id}
        if self.slack_user_name:
            data["slack_user_name"] = self.slack_user_name
        if self.channel_name:
            data["slack_channel_name"] = self.channel_name
        return data


@dataclass(frozen=True)
class SourceMessage:
    """The message a clicked button sits on."""

    channel_id: str
    ts: str
    thread_ts: str
    ephemeral: bool

    @classmethod
    def from_action(cls, body: dict[str, Any]) -> SourceMessage:
        container = body.get("container") or {}
        message = body.get("message") or {}
        return cls(
            channel_id=str(container.get("channel_id") or (body.get("channel") or {}).get("id") or ""),
            ts=str(container.get("message_ts") or message.get("ts") or ""),
            thread_ts=str(container.get("thread_ts") or message.get("thread_ts") or ""),
            ephemeral=bool(container.get("is_ephemeral")) or not message,
        )


def team_allowed(team_id: str, bot_team_id: str | None) -> bool:
    """Only the configured workspaces (default: the bot token's own) may use the bot."""
    allowed = set(settings.SLACK_TEAM_IDS) or ({bot_team_id} if bot_team_id else set())
    return bool(team_id) and team_id in allowed


def _tell(ctx: SlackContext, reply: f.Reply, **options: Any) -> None:
    """Answer through the interaction's response_url, after the acknowledgement."""
    outbox.defer(functools.partial(slack.respond, ctx.response_url, text=reply.text, blocks=reply.blocks,
                                   **options))


def _announce(ctx: SlackContext, *, job: Any, text: str, source: SourceMessage | None) -> None:
    """After the acknowledgement: say that `job` started (in the channel, or in place of the clicked
    message) and have its end told in that thread (or privately, from an ephemeral prompt)."""
    where: dict[str, Any] = {"click": source is not None}
    if source is not None:
        where["ephemeral"] = source.ephemeral
        where["thread_ts"] = "" if source.ephemeral else (source.thread_ts or source.ts)
    outbox.defer(functools.partial(
        notifications.announce_job, job=job, text=text, team_id=ctx.team_id, channel_id=ctx.channel_id,
        slack_user_id=ctx.slack_user_id, response_url=ctx.response_url, **where))


# --- slash commands -------------------------------------------------------------------------------

ACTING = (c.Create, c.CreateMany, c.Action, c.QuotaRequest, c.Subscribe, c.Unsubscribe, c.TakeSnapshot, c.GrowDisk, c.Unlink,
          c.Migrate, c.Extend,
          c.TakeBackup, c.RestoreBackup)  # backups (issue #11)


def handle_command(body: dict[str, Any], *, bot_team_id: str | None, raw_body: str = "") -> f.Reply:
    """Answer one slash command (the return value is the acknowledgement Slack shows)."""
    ctx = SlackContext.from_command(body)
    prefix = str(body.get("command") or settings.SLACK_COMMAND)[:32]
    if not team_allowed(ctx.team_id, bot_team_id):
        if bot_team_id is None and not settings.SLACK_TEAM_IDS:
            return f.connecting_reply()  # auth.test has not answered yet: which workspace is ours is unknown
        log.warning("Slack command from workspace %r refused (not connected)", ctx.team_id[:32])
        return f.unknown_team_reply()
    try:
        command = c.parse(str(body.get("text") or ""), prefix=prefix)
    except c.ParseError as exc:
        return f.parse_error_reply(exc.message, prefix)
    if isinstance(command, c.Link):
        return _link(ctx)
    identity = services.identity_resolve(team_id=ctx.team_id, slack_user_id=ctx.slack_user_id)
    if isinstance(command, c.Help):
        user = identity.user if identity else None
        return f.help_reply(prefix, is_staff=bool(user and user.is_staff), linked=identity is not None)
    if identity is None:
        return f.unlinked_reply(prefix)
    user = identity.user
    if not user.is_active:
        return f.inactive_reply()
    record = None
    if isinstance(command, ACTING):
        # Slack retries a slow request with the same body (same trigger id): act once, replay the answer.
        request_id = ctx.trigger_id or hashlib.sha256(raw_body.encode()).hexdigest()
        record, fresh = services.request_claim(key=f"command:{ctx.team_id}:{request_id}", kind="command",
                                               team_id=ctx.team_id, slack_user_id=ctx.slack_user_id,
                                               summary=str(body.get("text") or "")[:200])
        if not fresh:
            return f.Reply(**_replay(record.reply)) if record.reply else f.duplicate_reply()
    with audit_context(**ctx.audit_data()):
        try:
            reply = COMMANDS[type(command)](ctx, user, command, prefix)
        except PortalError as exc:
            reply = f.error_reply(exc, user=user)
    if record is not None:
        services.request_record_reply(record=record, reply=reply.as_body())
    return reply


def _replay(body: dict) -> dict:
    return {"text": body.get("text", ""), "blocks": body.get("blocks"),
            "response_type": body.get("response_type", "ephemeral")}


def _link(ctx: SlackContext) -> f.Reply:
    # No name from the request: the link page asks Slack (users.info) who this user id is.
    token = services.link_token_create(team_id=ctx.team_id, slack_user_id=ctx.slack_user_id,
                                       response_url=ctx.response_url)
    url = f.portal_url(reverse("chatops:link", args=[token]))
    return f.link_reply(url, max(1, settings.SLACK_LINK_TTL_SECONDS // 60))


def _list(ctx, user, command: c.ListVMs, prefix: str) -> f.Reply:
    vms = vm_list(user=user)
    total = vms.count()
    return f.vm_list_reply(list(vms[: f.MAX_LISTED]), user=user, total=total, prefix=prefix)


def _create(ctx: SlackContext, user, command: c.Create, prefix: str) -> f.Reply:
    result = vm_create(actor=user, via=Via.SLACK, name=command.name, image=command.image,
                       flavor=command.flavor, vcpus=command.vcpus, memory_mib=command.memory_mib,
                       disk_gib=command.disk_gib, description=command.description, group=command.group,
                       networks=None if command.networks is None else list(command.networks),
                       clone=command.clone, lease_days=command.lease)
    _announce(ctx, job=result.job, source=None,
              text=f.creating_text(slack_user_id=ctx.slack_user_id, vm=result.vm, job=result.job))
    return f.Reply(text="")  # the channel message says it all


def _extend(ctx: SlackContext, user, command: c.Extend, prefix: str) -> f.Reply:
    vm = vm_get_by_name(user=user, name=command.name)
    if command.remove:
        vm = vm_lease_set(actor=user, via=Via.SLACK, vm=vm, expires_at=None)
        return f.Reply(text=f"The lease of *{f.esc(vm.name)}* is removed: it no longer expires.")
    vm = vm_lease_extend(actor=user, via=Via.SLACK, vm=vm, days=command.days, until=command.until)
    return f.Reply(text=f"The lease of *{f.esc(vm.name)}* now ends {fmt_when(vm.expires_at)}.")


def _create_many(ctx: SlackContext, user, command: c.CreateMany, prefix: str) -> f.Reply:
    result = vm_bulk_create(actor=user, via=Via.SLACK, count=command.count, name_pattern=command.pattern,
                            start_number=command.start_number, image=command.image, flavor=command.flavor,
                            vcpus=command.vcpus, memory_mib=command.memory_mib, disk_gib=command.disk_gib,
                            description=command.description, group=command.group,
                            networks=None if command.networks is None else list(command.networks),
                            clone=command.clone, partial=command.partial, lease_days=command.lease)
    _announce(ctx, job=result.job, source=None,
              text=f.creating_many_text(slack_user_id=ctx.slack_user_id, result=result))
    return f.Reply(text="")  # the channel message says it all


def _action(ctx: SlackContext, user, command: c.Action, prefix: str) -> f.Reply:
    vm = vm_get_by_name(user=user, name=command.name)
    if command.action in c.CONFIRMED_ACTIONS:
        return f.confirm_reply(command.action, vm)
    return _run_vm_action(ctx, user, action=command.action, vm_id=vm.pk, source=None) or f.Reply(text="")


def _run_vm_action(ctx: SlackContext, user, *, action: str, vm_id: int,
                   source: SourceMessage | None) -> f.Reply | None:
    """Ask the service for a power action or delete; the job's end is told where it was asked."""

    def ask():
        if action == "delete":
            result = vm_delete(actor=user, via=Via.SLACK, vm=vm_id)
        else:
            result = vm_action(actor=user, via=Via.SLACK, vm=vm_id, action=action)
        return result.message, result.job

    return _run_job_request(ctx, source=source, ask=ask)


def _run_job_request(ctx: SlackContext, *, source: SourceMessage | None,
                     ask: Callable[[], tuple[str, Any]]) -> f.Reply | None:
    """Call a service that queues a job (`ask` returns its message and job, or no job for a no-op).

    The start is announced in the channel (or replaces the clicked message) and the job's end is
    told in that message's thread, both after the acknowledgement.
    """
    message, job = ask()
    if job is None:  # a no-op ("already running"): only the user hears of it
        reply = f.noop_reply(message)
        if source is None:
            return reply
        _tell(ctx, reply)
        return None
    _announce(ctx, job=job, source=source,
              text=f.started_action_text(slack_user_id=ctx.slack_user_id, message=message, job=job))
    return None


def _grow_disk(ctx, user, command: c.GrowDisk, prefix: str) -> f.Reply:
    vm = vm_get_by_name(user=user, name=command.name)

    def ask():
        result = vm_grow_disk(actor=user, via=Via.SLACK, vm=vm, disk_gib=command.disk_gib)
        return result.message, result.job

    return _run_job_request(ctx, source=None, ask=ask) or f.Reply(text="")


def _migrate(ctx, user, command: c.Migrate, prefix: str) -> f.Reply:
    vm = vm_get_by_name(user=user, name=command.name)

    def ask():
        result = vm_migrate(actor=user, via=Via.SLACK, vm=vm, host=command.host)
        return result.message, result.job

    return _run_job_request(ctx, source=None, ask=ask) or f.Reply(text="")


def _take_snapshot(ctx, user, command: c.TakeSnapshot, prefix: str) -> f.Reply:
    vm = vm_get_by_name(user=user, name=command.name)

    def ask():
        result = snapshot_create(actor=user, via=Via.SLACK, vm=vm, name=command.snapshot,
                                 description=command.description)
        return result.message, result.job

    return _run_job_request(ctx, source=None, ask=ask) or f.Reply(text="")


def _list_snapshots(ctx, user, command: c.ListSnapshots, prefix: str) -> f.Reply:
    vm = vm_get_by_name(user=user, name=command.name)
    return f.snapshot_list_reply(vm, list(vm_snapshots(vm=vm)), prefix=prefix)


def _revert(ctx, user, command: c.Revert, prefix: str) -> f.Reply:
    vm = vm_get_by_name(user=user, name=command.name)
    return f.revert_confirm_reply(vm, vm_snapshot_get(vm=vm, key=command.snapshot))


def _click_revert(ctx: SlackContext, user, value: str, source: SourceMessage) -> None:
    vm_part, _, snap_part = value.partition(":")
    vm_id, snapshot_id = _int(vm_part), _int(snap_part)

    def ask():
        result = snapshot_revert(actor=user, via=Via.SLACK, vm=vm_id, snapshot=snapshot_id)
        return result.message, result.job

    _run_job_request(ctx, source=source, ask=ask)


def _console(ctx, user, command: c.Console, prefix: str) -> f.Reply:
    vm = vm_get_by_name(user=user, name=command.name)
    links = {kind: console_link_create(actor=user, via=Via.SLACK, vm=vm, kind=kind) for kind in CONSOLE_LINK_KINDS}
    return f.console_reply(vm, screen_url=f.portal_url(links["screen"].path),
                           terminal_url=f.portal_url(links["terminal"].path),
                           ttl_minutes=max(1, links["screen"].ttl_seconds // 60))


def _info(ctx, user, command: c.Info, prefix: str) -> f.Reply:
    vm = vm_get_by_name(user=user, name=command.name)
    nics = vm_nics(vm=vm)
    return f.vm_info_reply(vm, nics, ssh=vm_ssh_command(vm=vm, nics=nics), user=user)


def _networks(ctx, user, command: c.Networks, prefix: str) -> f.Reply:
    networks = list(network_usable(user=user).prefetch_related("groups"))
    return f.networks_reply(networks, default=network_default_for(user=user), is_staff=user.is_staff, prefix=prefix)


def _images(ctx, user, command: c.Images, prefix: str) -> f.Reply:
    images = image_list(user=user).order_by("kind", "name")
    if command.kind:
        images = images.filter(kind=command.kind)
    return f.images_reply(list(images[: f.MAX_LISTED]), total=images.count(), user=user, kind=command.kind,
                          prefix=prefix, url=f.portal_url(reverse("storage:images")))


def _quota(ctx, user, command: c.Quota, prefix: str) -> f.Reply:
    pending = quota_request_pending(user=user)
    return f.quota_reply(quota_usage(user=user), prefix=prefix, pending=pending)


def _quota_request(ctx, user, command: c.QuotaRequest, prefix: str) -> f.Reply:
    request = quota_request_create(actor=user, via=Via.SLACK, max_vms=command.max_vms, max_vcpus=command.max_vcpus,
                                   max_memory_mib=command.max_memory_mib, max_disk_gib=command.max_disk_gib,
                                   reason=command.reason, max_backup_gib=command.max_backup_gib)
    return _quota_request_sent(request)


def _quota_request_sent(request) -> f.Reply:
    # The admins' post itself follows the acknowledgement (chatops.notifications).
    return f.quota_request_created_reply(request, quota_request_summary(request),
                                         posted=bool(settings.SLACK_ADMIN_CHANNEL))


def _unlink(ctx: SlackContext, user, command: c.Unlink, prefix: str) -> f.Reply:
    identity = services.identity_get(team_id=ctx.team_id, slack_user_id=ctx.slack_user_id)
    if identity is None:  # unlinked meanwhile (by an administrator, or a twin request)
        return f.unlinked_reply(prefix)
    services.identity_unlink(actor=user, via=Via.SLACK, identity=identity)
    return f.unlink_reply(user.get_username(), prefix)


def _hosts(ctx, user, command: c.Hosts, prefix: str) -> f.Reply:
    return f.hosts_reply(host_capacity_for(actor=user))


def _keys(ctx, user, command: c.ListKeys, prefix: str) -> f.Reply:
    keys = sshkey_list(user)
    return f.key_list_reply(list(keys[: f.MAX_LISTED]), total=keys.count(), url=f.portal_url(reverse("accounts:keys")))


def _where(ctx: SlackContext, where: str) -> str:
    return ctx.slack_user_id if where == "me" else ctx.channel_id


def _subscribe(ctx, user, command: c.Subscribe, prefix: str) -> f.Reply:
    sub = services.subscription_set(actor=user, via=Via.SLACK, team_id=ctx.team_id,
                                    channel_id=_where(ctx, command.where), events=command.events)
    labels = ", ".join(services.EVENT_LABELS[e] for e in sub.events)
    where = "You'll get direct messages" if command.where == "me" else "This channel gets"
    return f.Reply(text=f"🔔 {where} for: {labels} (about the VMs you can see). "
                        f"`{prefix} unsubscribe{' me' if command.where == 'me' else ''}` stops it.")


def _unsubscribe(ctx, user, command: c.Unsubscribe, prefix: str) -> f.Reply:
    removed = services.subscription_remove(actor=user, via=Via.SLACK, team_id=ctx.team_id,
                                           channel_id=_where(ctx, command.where))
    return f.Reply(text="🔕 Unsubscribed." if removed else "There was no subscription to remove.")


def _subscriptions(ctx, user, command: c.Subscriptions, prefix: str) -> f.Reply:
    return f.subscriptions_reply(list(services.subscription_list(actor=user)), services.EVENT_LABELS, prefix=prefix)


# --- backups (issue #11) ---

def _take_backup(ctx, user, command: c.TakeBackup, prefix: str) -> f.Reply:
    vm = vm_get_by_name(user=user, name=command.name)

    def ask():
        backup, job, message = backup_services.backup_create(actor=user, via=Via.SLACK, vm=vm, kind=command.kind)
        return f"{message} (backup #{backup.pk})", job

    return _run_job_request(ctx, source=None, ask=ask) or f.Reply(text="")


def _list_backups(ctx, user, command: c.ListBackups, prefix: str) -> f.Reply:
    if command.name:
        vm = vm_get_by_name(user=user, name=command.name)
        backups = backup_selectors.vm_backups(actor=user, vm=vm)
        return f.backup_list_reply(backups[: f.MAX_LISTED], total=len(backups), vm=vm, prefix=prefix)
    visible = backup_selectors.backups_visible(user)
    return f.backup_list_reply(list(visible[: f.MAX_LISTED]), total=visible.count(), prefix=prefix)


def _restore_backup(ctx, user, command: c.RestoreBackup, prefix: str) -> f.Reply:
    backup = backup_selectors.backup_get(actor=user, key=command.backup)

    def ask():
        _vm, job, message = backup_services.backup_restore(actor=user, via=Via.SLACK, backup=backup,
                                                           name=command.name)
        return message, job

    return _run_job_request(ctx, source=None, ask=ask) or f.Reply(text="")


def _click_backup_restore(ctx: SlackContext, user, value: str, source: SourceMessage) -> None:
    backup = backup_selectors.backup_get(actor=user, key=_int(value))

    def ask():
        _vm, job, message = backup_services.backup_restore(actor=user, via=Via.SLACK, backup=backup,
                                                           name=f.backup_restore_name(backup))
        return message, job

    _run_job_request(ctx, source=source, ask=ask)

# --- end backups ---


COMMANDS = {
    c.TakeBackup: _take_backup,  # backups (issue #11)
    c.ListBackups: _list_backups,
    c.RestoreBackup: _restore_backup,
    c.ListVMs: _list,
    c.Create: _create,
    c.CreateMany: _create_many,
    c.Action: _action,
    c.Extend: _extend,
    c.Console: _console,
    c.Info: _info,
    c.Networks: _networks,
    c.Images: _images,
    c.Quota: _quota,
    c.QuotaRequest: _quota_request,
    c.Hosts: _hosts,
    c.ListKeys: _keys,
    c.Subscribe: _subscribe,
    c.Unsubscribe: _unsubscribe,
    c.Subscriptions: _subscriptions,
    c.TakeSnapshot: _take_snapshot,
    c.GrowDisk: _grow_disk,
    c.Migrate: _migrate,
    c.ListSnapshots: _list_snapshots,
    c.Revert: _revert,
    c.Unlink: _unlink,
}


# --- buttons --------------------------------------------------------------------------------------

def handle_action(body: dict[str, Any], action: dict[str, Any], *, bot_team_id: str | None,
                  retry: bool = False) -> None:
    """Handle one button click (already acknowledged); answers go to the interaction's response_url."""
    ctx = SlackContext.from_action(body)
    source = SourceMessage.from_action(body)
    action_id = str(action.get("action_id") or "")
    value = str(action.get("value") or "")[:200]

    def tell(reply: f.Reply) -> None:
        _tell(ctx, reply)

    if not team_allowed(ctx.team_id, bot_team_id):
        if bot_team_id is None and not settings.SLACK_TEAM_IDS:
            tell(f.connecting_reply())
            return
        log.warning("Slack click from workspace %r refused (not connected)", ctx.team_id[:32])
        tell(f.unknown_team_reply())
        return
    if action_id == f.A_CONSOLE:
        return  # a link button: Slack opens the portal page, which checks who may see it
    if action_id == f.A_CANCEL:
        _tell(ctx, f.Reply(text="Cancelled."), delete_original=True)
        return
    identity = services.identity_resolve(team_id=ctx.team_id, slack_user_id=ctx.slack_user_id)
    if identity is None:
        tell(f.unlinked_reply(settings.SLACK_COMMAND))
        return
    user = identity.user
    if not user.is_active:
        tell(f.inactive_reply())
        return
    # One message, one button, one effect: a double click or a retried delivery finds the record.
    record, fresh = services.request_claim(
        key=f"action:{ctx.team_id}:{source.channel_id}:{source.ts}:{action_id}:{value}", kind="action",
        team_id=ctx.team_id, slack_user_id=ctx.slack_user_id, summary=f"{action_id} {value}")
    if not fresh:
        if not retry:  # Slack re-sending a slow click needs no second answer; a double click does
            tell(f.duplicate_reply())
        return
    with audit_context(**ctx.audit_data()):
        try:
            if action_id in f.ACTION_BY_ID:
                _run_vm_action(ctx, user, action=f.ACTION_BY_ID[action_id], vm_id=_int(value), source=source)
            elif action_id == f.A_SNAPSHOT_REVERT:
                _click_revert(ctx, user, value, source)
            elif action_id == f.A_BACKUP_RESTORE:  # backups (issue #11)
                _click_backup_restore(ctx, user, value, source)
            elif action_id == f.A_QUOTA_REQUEST:
                _click_quota_request(ctx, user, value)
            elif action_id == f.A_QUOTA_APPROVE:
                quota_request_approve(actor=user, via=Via.SLACK, request=_int(value))
            elif action_id == f.A_QUOTA_DENY:
                quota_request_deny(actor=user, via=Via.SLACK, request=_int(value))
            else:
                raise ValidationFailed("This button is not known to the portal.")
        except PortalError as exc:
            services.request_release(record=record)  # nothing happened: the button may be tried again
            tell(f.error_reply(exc, user=user))


def _int(value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise ValidationFailed("This button carries no valid id.")
    return int(value)


def _click_quota_request(ctx: SlackContext, user, value: str) -> None:
    try:
        size = json.loads(value)
        if not isinstance(size, dict):
            raise ValueError
    except ValueError:
        raise ValidationFailed("This button carries no valid size.") from None
    group = None
    if size.get("group"):
        if not isinstance(size["group"], int) or isinstance(size["group"], bool):
            raise ValidationFailed("This button carries no valid group.")
        group = Group.objects.filter(pk=size["group"]).first()
    request = quota_request_for_size(actor=user, via=Via.SLACK, vms=size.get("vms", 1), vcpus=size.get("vcpus"),
                                     memory_mib=size.get("memory_mib"), disk_gib=size.get("disk_gib"), group=group)
    reply = _quota_request_sent(request)
    _tell(ctx, f.Reply(text=reply.text, blocks=[f.section(reply.text)]), replace_original=True)
