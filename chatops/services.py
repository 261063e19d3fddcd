"""ChatOps rules: linking Slack users to portal accounts, idempotency of Slack requests, job watches
and notification subscriptions. VM and quota rules stay in their own services.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.dispatch import Signal
from django.utils import timezone

from portal.actors import Actor, is_admin, require_user
from portal.audit import audit
from portal.choices import Via
from portal.exceptions import Conflict, Gone, NotFound, PermissionDenied, ValidationFailed
from portal.jobs.selectors import job_visible
from portal.models import AuditEvent, Job
from portal.tokens import new_token, token_hash
from vms.models import VM
from vms.selectors import vm_visible

from .models import JobWatch, LinkToken, SlackIdentity, SlackRequest, Subscription

log = logging.getLogger(__name__)

# --- identity -------------------------------------------------------------------------------------

# Sent after the commit of a refused link, with `identity` (the existing link, untouched) and `actor`
# (the portal user who tried): chatops.notifications tells the Slack user by direct message.
identity_link_refused = Signal()

LINKED_ELSEWHERE = ("This Slack user is already linked to another portal account, so nothing was changed. "
                    "That account must unlink it first (with /vm unlink in Slack, or an administrator in the "
                    "admin); then type /vm link in Slack again.")


def identity_resolve(*, team_id: str, slack_user_id: str) -> SlackIdentity | None:
    """The link of this Slack user in this workspace, or None (unlinked users may do nothing)."""
    if not team_id or not slack_user_id:
        return None
    identity = (SlackIdentity.objects.select_related("user")
                .filter(team_id=team_id, slack_user_id=slack_user_id).first())
    if identity is not None:
        SlackIdentity.objects.filter(pk=identity.pk).update(last_used_at=timezone.now())
    return identity



def link_token_create(*, team_id: str, slack_user_id: str, slack_name: str = "", response_url: str = "") -> str:
    """A one-time token for `/slack/link/<token>/`; only its hash is stored. Returns the token."""
    token = new_token(32)
    LinkToken.objects.create(
        token_hash=token_hash(token), team_id=team_id, slack_user_id=slack_user_id, slack_name=slack_name[:100],
        response_url=response_url[:500],
        expires_at=timezone.now() + timedelta(seconds=settings.SLACK_LINK_TTL_SECONDS))
    return token


def link_token_get(*, token: str) -> LinkToken:
    """An open link token, or NotFound/InvalidState with the reason in plain words."""
    found = LinkToken.objects.filter(token_hash=token_hash(token or "")).first()
    if found is None:
        raise NotFound("This link is not valid. Type /vm link in Slack to get a new one.")
    if found.used_at is not None:
        raise Gone("This link was already used. Type /vm link in Slack to get a new one.")
    if found.expires_at <= timezone.now():
        raise Gone("This link has expired. Type /vm link in Slack to get a new one.")
    return found


def identity_get(*, team_id: str, slack_user_id: str) -> SlackIdentity | None:
    """The link of this Slack user in this workspace, if any (a read: nothing is marked as used)."""
    return (SlackIdentity.objects.select_related("user")
            .filter(team_id=team_id, slack_user_id=slack_user_id).first())


def identity_link(*, actor: Actor, via: str = Via.WEB, token: str, slack_name: str = "") -> SlackIdentity:
    """Link the Slack user of `token` to `actor` (the signed-in portal user); the token works once.

    `slack_name` is the name Slack itself reports for that user (shown only). A Slack user already
    linked to another portal account is never moved: Conflict, until that account unlinks it. The
    refusal is audited for both accounts and announced with `identity_link_refused`.
    """
    actor = require_user(actor, "Sign in to the portal to link your Slack account.")
    refused: SlackIdentity | None = None
    with transaction.atomic():
        found = link_token_get(token=token)
        used = LinkToken.objects.filter(pk=found.pk, used_at__isnull=True).update(
            used_at=timezone.now(), used_by=actor)
        if not used:  # a twin request won the race
            raise Gone("This link was already used. Type /vm link in Slack to get a new one.")
        data = {"slack_team": found.team_id, "slack_user": found.slack_user_id}
        # get_or_create, never update_or_create: an existing link keeps its account, even in a race.
        identity, created = SlackIdentity.objects.get_or_create(
            team_id=found.team_id, slack_user_id=found.slack_user_id,
            defaults={"user": actor, "slack_name": slack_name[:100]})
        if not created and identity.user_id != actor.pk:
            refused = identity
            _audit_link_refused(actor=actor, via=via, identity=identity, data=data)
            transaction.on_commit(lambda: _announce_link_refused(identity=refused, actor=actor))
        else:
            if not created:  # the same account again: refresh what we show
                identity.slack_name = slack_name[:100] or identity.slack_name
                identity.linked_at = timezone.now()
                identity.save(update_fields=["slack_name", "linked_at"])
            audit(actor=actor, via=via, action="slack.link", target_type="slackidentity",
                  target_id=str(identity.pk), target_name=f"{found.team_id}/{found.slack_user_id}",
                  message=f"Linked Slack user {found.slack_user_id} ({slack_name or 'name unknown'}) of "
                          f"workspace {found.team_id}", data=data)
    if refused is not None:
        raise Conflict(LINKED_ELSEWHERE, slack_team=found.team_id, slack_user=found.slack_user_id)
    return identity


def _audit_link_refused(*, actor: User, via: str, identity: SlackIdentity, data: dict[str, str]) -> None:
    """Two rows: one on the Slack identity (the attempt), one on the account that keeps it."""
    owner = identity.user
    who, whose = actor.get_username(), owner.get_username()
    slack_user = f"Slack user {identity.slack_user_id} of workspace {identity.team_id}"
    data = {**data, "linked_to": whose, "requested_by": who}
    audit(actor=actor, via=via, action="slack.link", target_type="slackidentity", target_id=str(identity.pk),
          target_name=f"{identity.team_id}/{identity.slack_user_id}", outcome=AuditEvent.Outcome.DENIED,
          message=f"Refused to link {slack_user} to {who}: it is linked to {whose}, which must unlink it first",
          data=data)
    audit(actor=actor, via=via, action="slack.link", target_type="user", target_id=str(owner.pk),
          target_name=whose, outcome=AuditEvent.Outcome.DENIED,
          message=f"{who} tried to link {slack_user}, which is linked to {whose}, to their own account; refused",
          data=data)


def _announce_link_refused(*, identity: SlackIdentity, actor: Actor) -> None:
    for receiver, result in identity_link_refused.send_robust(sender=SlackIdentity, identity=identity, actor=actor):
        if isinstance(result, Exception):
            log.error("%r failed for a refused link of %s", receiver, identity.slack_user_id, exc_info=result)


def identity_unlink(*, actor: Actor, via: str, identity: SlackIdentity) -> None:
    """Remove a link (administrators, or the linked user); the Slack user can do nothing until relinked."""
    actor = require_user(actor, "Only administrators can unlink other people's Slack accounts.")
    if not (is_admin(actor) or actor.pk == identity.user_id):
        raise PermissionDenied("Only administrators can unlink other people's Slack accounts.")
    with transaction.atomic():
        audit(actor=actor, via=via, action="slack.unlink", target_type="slackidentity", target_id=str(identity.pk),
              target_name=f"{identity.team_id}/{identity.slack_user_id}",
              message=f"Unlinked Slack user {identity.slack_user_id} from {identity.user.get_username()}",
              data={"slack_team": identity.team_id, "slack_user": identity.slack_user_id})
        Subscription.objects.filter(team_id=identity.team_id, owner=identity.user,
                                    channel_id=identity.slack_user_id).delete()
        identity.delete()


def identities_of(*, user: User) -> QuerySet[SlackIdentity]:
    return SlackIdentity.objects.filter(user=user)


# --- idempotency ----------------------------------------------------------------------------------


def request_claim(*, key: str, kind: str, team_id: str, slack_user_id: str,
                  summary: str = "") -> tuple[SlackRequest, bool]:
    """Claim a Slack request key; returns (record, True) the first time, (existing record, False) after.

    The unique key makes this exactly-once across threads and processes.
    """
    key = key[:255]
    try:
        with transaction.atomic():
            record = SlackRequest.objects.create(key=key, kind=kind, team_id=team_id, slack_user_id=slack_user_id,
                                                 summary=summary[:200])
    except IntegrityError:
        return SlackRequest.objects.get(key=key), False
    requests_prune()
    return record, True


def request_record_reply(*, record: SlackRequest, reply: dict) -> None:
    SlackRequest.objects.filter(pk=record.pk).update(reply=reply)
    record.reply = reply


def request_release(*, record: SlackRequest) -> None:
    """Forget a claim whose click did nothing (refused), so the same button can be tried again later."""
    SlackRequest.objects.filter(pk=record.pk).delete()


def requests_prune(*, older_than: timedelta = timedelta(days=7)) -> int:
    """Slack retries within minutes and buttons live for days: keep a week of keys (and link tokens)."""
    cutoff = timezone.now() - older_than
    deleted, _ = SlackRequest.objects.filter(created_at__lt=cutoff).delete()
    LinkToken.objects.filter(expires_at__lt=cutoff).delete()
    return deleted


# --- job watches ----------------------------------------------------------------------------------


def job_watch_add(*, job: Job, team_id: str, channel_id: str, slack_user_id: str, thread_ts: str = "",
                  response_url: str = "", ephemeral: bool = False) -> JobWatch:
    """Remember to tell this Slack conversation when `job` ends."""
    return JobWatch.objects.create(job=job, team_id=team_id, channel_id=channel_id or "",
                                   slack_user_id=slack_user_id, thread_ts=thread_ts or "",
                                   response_url=(response_url or "")[:500], ephemeral=ephemeral)


def job_watches_claim(*, job: Job) -> list[JobWatch]:
    """The watches of a finished job, each returned once even if the notice runs twice."""
    claimed = []
    for watch in JobWatch.objects.filter(job=job, notified_at__isnull=True):
        if JobWatch.objects.filter(pk=watch.pk, notified_at__isnull=True).update(notified_at=timezone.now()):
            claimed.append(watch)
    return claimed


# --- subscriptions --------------------------------------------------------------------------------

EVENT_LABELS = dict(Subscription.Event.choices)


def subscription_set(*, actor: Actor, via: str = Via.SLACK, team_id: str, channel_id: str,
                     events: list[str] | tuple[str, ...]) -> Subscription:
    """Send `events` (about what `actor` may see) to a channel or, with a user id, by direct message."""
    actor = require_user(actor, "Link your Slack account first.")
    events = list(dict.fromkeys(events))
    unknown = [e for e in events if e not in Subscription.Event.values]
    if unknown or not events:
        raise ValidationFailed(f"Unknown events: {', '.join(unknown) or 'none given'}.", field="events")
    if Subscription.Event.HOST_DOWN in events and not actor.is_staff:
        raise PermissionDenied("Only administrators can subscribe to host events.")
    if not channel_id:
        raise ValidationFailed("Slack did not say which channel this is.", field="channel")
    with transaction.atomic():
        sub, created = Subscription.objects.update_or_create(
            team_id=team_id, channel_id=channel_id, owner=actor, defaults={"events": events})
        audit(actor=actor, via=via, action="slack.subscribe", target_type="subscription", target_id=str(sub.pk),
              target_name=channel_id, message=f"{'Subscribed' if created else 'Changed'}: {', '.join(events)}",
              data={"slack_team": team_id, "slack_channel": channel_id, "events": events})
    return sub


def subscription_remove(*, actor: Actor, via: str = Via.SLACK, team_id: str, channel_id: str) -> int:
    actor = require_user(actor, "Sign in first.")
    deleted, _ = Subscription.objects.filter(team_id=team_id, channel_id=channel_id, owner=actor).delete()
    if deleted:
        audit(actor=actor, via=via, action="slack.unsubscribe", target_type="subscription", target_name=channel_id,
              message="Unsubscribed", data={"slack_team": team_id, "slack_channel": channel_id})
    return deleted


def subscription_list(*, actor: Actor) -> QuerySet[Subscription]:
    actor = require_user(actor, "Sign in first.")
    return Subscription.objects.filter(owner=actor)


def subscriptions_for(*, event: str, job: Job | None = None, vm: VM | None = None) -> list[Subscription]:
    """Subscriptions to `event` whose owner may see the job or VM (host events: administrators only)."""
    subs = []
    for sub in Subscription.objects.select_related("owner").filter(owner__is_active=True):
        if event not in sub.events:
            continue
        if job is not None:
            if not job_visible(user=sub.owner).filter(pk=job.pk).exists():
                continue
        elif vm is not None:
            if not vm_visible(user=sub.owner).filter(pk=vm.pk).exists():
                continue
        elif not sub.owner.is_staff:
            continue
        subs.append(sub)
    return subs
