"""SSH keys page: your keys, the form to add one, and delete (each through accounts.services)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from portal.choices import Via
from portal.exceptions import PortalError
from portal.web import form_error, portal_view

from .forms import SSHKeyForm
from .selectors import sshkey_list
from .services import sshkey_add, sshkey_delete
from .validation import ACCEPTED


@login_required
@require_http_methods(["GET", "POST"])
@portal_view(fallback="accounts:keys")
def sshkey_list_view(request: HttpRequest) -> HttpResponse:
    """Your SSH keys and the form to add one (POST here adds it)."""
    form = SSHKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            key = sshkey_add(actor=request.user, via=Via.WEB, **form.cleaned_data)
        except PortalError as exc:
            form_error(form, exc, user=request.user)
        else:
            messages.success(request, f"Added SSH key {key.name} ({key.fingerprint}).")
            return redirect("accounts:keys")
    status = 400 if request.method == "POST" else 200
    return render(request, "accounts/keys.html", {
        "form": form, "keys": list(sshkey_list(request.user)), "accepted": ACCEPTED,
    }, status=status)


@login_required
@require_POST
@portal_view(fallback="accounts:keys")
def sshkey_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    key = sshkey_delete(actor=request.user, via=Via.WEB, key=pk)
    messages.success(request, f"Deleted SSH key {key.name}. VMs created before keep it until you remove it there.")
    return redirect("accounts:keys")
