"""VM pools on the web: the Pools page (pools you may take from, Take a VM), a pool's page, and the Pool
panel of a pool VM's page (registered with vms.panels: Return). Thin: parse, call one service, redirect."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from portal.choices import Via
from portal.web import portal_view
from vms.models import VM

from . import selectors, services


def panel_shows(vm: VM) -> bool:
    """Only pool VMs' pages have the Pool panel."""
    return selectors.pool_member_of(vm=vm) is not None


def panel_context(request: HttpRequest, vm: VM) -> dict:
    member = selectors.pool_member_of(vm=vm)
    return {"member": member, "may_return": member is not None and member.taken_by_id is not None
            and (member.taken_by_id == request.user.pk or request.user.is_staff)}


@login_required
@require_GET
def pool_list_view(request: HttpRequest) -> HttpResponse:
    pools = list(selectors.pool_list(user=request.user))
    held = {m.pool_id: m for m in selectors.pool_held(user=request.user)}
    return render(request, "pools/list.html", {"pools": [(p, held.get(p.pk)) for p in pools]})


@login_required
@require_GET
@portal_view(fallback="pools:list")
def pool_detail_view(request: HttpRequest, name: str) -> HttpResponse:
    pool = selectors.pool_get(user=request.user, key=name)
    members = selectors.pool_members(pool=pool) if request.user.is_staff else None
    held = selectors.pool_held(user=request.user, pool=pool).first()
    return render(request, "pools/detail.html", {"pool": pool, "members": members, "held": held})


@login_required
@require_POST
@portal_view(fallback="pools:list")
def pool_take_view(request: HttpRequest, name: str) -> HttpResponse:
    result = services.pool_take(actor=request.user, via=Via.WEB, pool=name)
    messages.success(request, result.message)
    return redirect("vms:detail", result.vm.pk)


@login_required
@require_POST
@portal_view(fallback="pools:list")
def pool_return_view(request: HttpRequest, vm_id: int) -> HttpResponse:
    result = services.pool_return(actor=request.user, via=Via.WEB, vm=vm_id)
    messages.success(request, result.message)
    if request.user.is_staff:
        return redirect(reverse("vms:detail", args=[vm_id]) + "#pool")
    return redirect("pools:list")
