"""Slack notices for things that happen in the portal, whichever door caused them.

Connected in ChatopsConfig.ready:
- portal.jobs.job_finished -> the thread (or response_url) that asked for the job, then subscribers;
- AuditEvent rows `vm.drift` (state changed outside the portal) and `host.down` -> subscribers;
- quotas.services signals -> the admins' channel and the requester's direct messages;
- chatops.services.identity_link_refused -> the Slack user whose link someone tried to take;
- vms.leases.lease_reminder / lease_expired -> the VM owner's direct messages.
Every post is best-effort (chatops.slack): a Slack failure never changes a portal outcome. When an
event happens while a Slack request is being answered, its posts wait for the acknowledgement
(chatops.outbox).
"""

from __future__ import annotations

import functools
import logging

from django.conf import settings
from django.db import transaction

from cluster.models import Host
from portal.choices import JobStatus
from portal.models import AuditEvent, Job
from quotas.models import QuotaRequest
from quotas.selectors import quota_request_summary, quota_usage
from vms.models import VM

from . import formatting as f
from . import outbox, services, slack
from .models import QuotaRequestPost, SlackIdentity, Subscription

log = logging.getLogger(__name__)


def _vm_of(job: Job):
    if job.target_type != "vm" or not job.target_id.isdigit():
        return None
    return VM.objects.select_related("image", "owner").filter(pk=int(job.target_id)).first()


def on_job_finished(sender, *, job: Job, **kwargs) -> None:
    """Tell the conversation that asked for `job`, then the subscribers who may see it."""
    if slack.is_configured():
        outbox.defer(functools.partial(job_finished_tell, job=job))


def job_finished_tell(*, job: Job) -> None:
    """The posts for a finished job: its watchers' conversations, then subscriptions."""
    vm = _vm_of(job)
    told_channels, told_users = _tell_watchers(job, vm)
    if job.status == JobStatus.SUCCEEDED:
        event = Subscription.Event.JOB_SUCCEEDED
    elif job.status in (JobStatus.FAILED, JobStatus.ERRORED):
        event = Subscription.Event.JOB_FAILED
    else:
        return
    for sub in services.subscriptions_for(event=event, job=job):
        key = (sub.team_id, sub.channel_id)
        if key in told_channels or key in told_users:
            continue
        reply = f.job_notice(job, vm)
        if slack.post_message(channel=sub.channel_id, text=reply.text, blocks=reply.blocks) is not None:
            told_channels.add(key)


def announce_job(*, job: Job, text: str, team_id: str, channel_id: str, slack_user_id: str, response_url: str,
                 click: bool = False, thread_ts: str = "", ephemeral: bool = False) -> None:
    """Say that `job` started, then watch it: its end is told in the announcement's thread.

    A typed command is announced in the channel (through the command's response_url when the bot
    cannot post there); a click replaces the clicked message. Runs after the acknowledgement, so
    the job may have ended already: then its end is told here, once (watches are claimed).
    """
    blocks = [f.section(text)]
    if not click:
        posted = slack.post_message(channel=channel_id, text=text, blocks=blocks)
        if posted is not None:
            channel_id, thread_ts = posted.channel, posted.ts
        else:  # the bot is not in this channel: the command's own response speaks in it
            slack.respond(response_url, text=text, blocks=blocks, response_type="in_channel")
    else:
        slack.respond(response_url, text=text, blocks=blocks, replace_original=True)
    services.job_watch_add(job=job, team_id=team_id, channel_id=channel_id, slack_user_id=slack_user_id,
                           thread_ts=thread_ts, response_url=response_url, ephemeral=ephemeral)
    job.refresh_from_db()
    if job.status in JobStatus.FINISHED:  # type: ignore[attr-defined]
        _tell_watchers(job, _vm_of(job))


def _tell_watchers(job: Job, vm) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Tell each conversation waiting for `job` (each once); returns the channels and users told."""
    told_channels: set[tuple[str, str]] = set()
    told_users: set[tuple[str, str]] = set()
    for watch in services.job_watches_claim(job=job):
        reply = f.job_result_reply(job, vm, slack_user_id=watch.slack_user_id)
        done = False
        if watch.thread_ts and watch.channel_id and not watch.ephemeral:
            done = slack.post_message(channel=watch.channel_id, text=reply.text, blocks=reply.blocks,
                                      thread_ts=watch.thread_ts) is not None
            if done:
                told_channels.add((watch.team_id, watch.channel_id))
        if not done and watch.response_url:
            done = slack.respond(watch.response_url, text=reply.text, blocks=reply.blocks,
                                 response_type="ephemeral" if watch.ephemeral else "in_channel")
        if done:
            told_users.add((watch.team_id, watch.slack_user_id))
    return told_channels, told_users


def notify_vm_state(*, vm, message: str) -> None:
    """A VM changed state outside the portal (seen by reconcile or a libvirt event)."""
    if not slack.is_configured():
        return
    reply = f.drift_notice(vm, message)
    for sub in services.subscriptions_for(event=Subscription.Event.VM_STATE, vm=vm):
        slack.post_message(channel=sub.channel_id, text=reply.text, blocks=reply.blocks)


def notify_host_down(*, host, reason: str = "") -> None:
    """A host stopped answering: administrators' subscriptions hear of it."""
    if not slack.is_configured():
        return
    reply = f.host_down_notice(host, reason)
    for sub in services.subscriptions_for(event=Subscription.Event.HOST_DOWN):
        slack.post_message(channel=sub.channel_id, text=reply.text, blocks=reply.blocks)


def on_audit_event(sender, *, instance: AuditEvent, created: bool, **kwargs) -> None:
    """Audit rows are the portal's record of out-of-band changes: relay the ones people subscribe to."""
    if not created or instance.action not in ("vm.drift", "host.down") or not slack.is_configured():
        return
    target_id, message = instance.target_id, instance.message

    def relay() -> None:
        try:
            if instance.action == "vm.drift":
                vm = VM.objects.filter(pk=int(target_id)).first() if target_id.isdigit() else None
                if vm is not None:
                    notify_vm_state(vm=vm, message=message)
            else:
                host = Host.objects.filter(pk=int(target_id)).first() if target_id.isdigit() else None
                if host is not None:
                    notify_host_down(host=host, reason=message)
        except Exception:
            log.exception("Slack notice for %s failed", instance.action)

    transaction.on_commit(lambda: outbox.defer(relay))


# --- quota requests -------------------------------------------------------------------------------

def who(user) -> str:
    """A portal user as Slack shows them: a mention when linked, with the portal user name."""
    identity = SlackIdentity.objects.filter(user=user).first()
    name = f.esc(user.get_username())
    return f"<@{identity.slack_user_id}> ({name})" if identity else name


def on_quota_request_created(sender, *, quota_request: QuotaRequest, **kwargs) -> None:
    """Post the request to the admins' channel with [Approve] [Deny]."""
    if slack.is_configured() and settings.SLACK_ADMIN_CHANNEL:
        outbox.defer(functools.partial(quota_request_post, request=quota_request))


def quota_request_post(*, request: QuotaRequest) -> None:
    """The admins' post of a new quota request (remembered, so the decision can update it)."""
    channel = settings.SLACK_ADMIN_CHANNEL
    usage = quota_usage(user=None if request.group_id else request.requester, group=request.group)
    reply = f.quota_request_admin_post(request, quota_request_summary(request), requester=who(request.requester),
                                       usage_text=f.quota_text(usage))
    posted = slack.post_message(channel=channel, text=reply.text, blocks=reply.blocks)
    if posted is not None:
        QuotaRequestPost.objects.update_or_create(quota_request=request,
                                                  defaults={"channel_id": posted.channel, "ts": posted.ts})


def on_quota_request_decided(sender, *, quota_request: QuotaRequest, **kwargs) -> None:
    """Close the admins' post (no more buttons) and tell the requester by direct message."""
    if slack.is_configured():
        outbox.defer(functools.partial(quota_request_decided_tell, request=quota_request))


def quota_request_decided_tell(*, request: QuotaRequest) -> None:
    """Update the admins' post of a decided request and send the requester a direct message."""
    summary = quota_request_summary(request)
    decider = who(request.decided_by) if request.decided_by_id else "an administrator"
    post = QuotaRequestPost.objects.filter(quota_request=request).first()
    if post is not None:
        reply = f.quota_request_decided_post(request, summary, requester=who(request.requester), decider=decider)
        slack.update_message(channel=post.channel_id, ts=post.ts, text=reply.text, blocks=reply.blocks)
    dm = f.quota_request_decided_dm(request, summary, decider=decider)
    for identity in SlackIdentity.objects.filter(user=request.requester):
        slack.post_message(channel=identity.slack_user_id, text=dm.text, blocks=dm.blocks)


# --- VM leases (vms.leases signals) ------------------------------------------------------------------

def on_lease_reminder(sender, *, vm: VM, expires_at, days_before: int, **kwargs) -> None:
    """A VM's lease ends soon: its owner's linked Slack users get a direct message."""
    if slack.is_configured():
        outbox.defer(functools.partial(lease_tell, vm=vm, reply=f.lease_reminder_dm(
            vm, expires_at=expires_at, days_before=days_before, prefix=settings.SLACK_COMMAND)))


def on_lease_expired(sender, *, vm: VM, expires_at, what: str, **kwargs) -> None:
    """A VM's lease ended (stopped) or its grace period did (deleted): its owner hears of it."""
    if slack.is_configured():
        outbox.defer(functools.partial(lease_tell, vm=vm, reply=f.lease_expired_dm(
            vm, expires_at=expires_at, what=what, prefix=settings.SLACK_COMMAND)))


def lease_tell(*, vm: VM, reply: f.Reply) -> None:
    for identity in SlackIdentity.objects.filter(user_id=vm.owner_id):
        slack.post_message(channel=identity.slack_user_id, text=reply.text, blocks=reply.blocks)


# --- links ----------------------------------------------------------------------------------------

def on_identity_link_refused(sender, *, identity: SlackIdentity, actor, **kwargs) -> None:
    """Someone tried to link a Slack user who is linked to another account: tell that Slack user."""
    if slack.is_configured():
        outbox.defer(functools.partial(link_refused_tell, identity=identity, actor=actor))


def link_refused_tell(*, identity: SlackIdentity, actor) -> None:
    """The direct message to the Slack user whose link stays where it was."""
    dm = f.link_refused_dm(linked_to=identity.user.get_username(), tried_by=actor.get_username(),
                           prefix=settings.SLACK_COMMAND)
    slack.post_message(channel=identity.slack_user_id, text=dm.text, blocks=dm.blocks)
