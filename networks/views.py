"""The networks page for users: which networks they may put VMs on, read-only (administrators define
networks in the admin or through the API). Thin: one selector, one template."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.web import portal_view

from .selectors import network_default_for, network_usable


@login_required
@require_GET
@portal_view
def network_list_view(request: HttpRequest) -> HttpResponse:
    """Networks: name, title, mode, address range, and which one new VMs get by default."""
    networks = list(network_usable(user=request.user).prefetch_related("groups"))
    return render(request, "networks/list.html", {
        "networks": networks,
        "default_network": network_default_for(user=request.user),
    })
