"""Back-office pages for usage reports (staff only, wrapped by admin.site.admin_view in portal/urls.py): usage
per user, group or host with a period picker, a bar chart (server-rendered SVG) and CSV export; idle VMs with
"stop" for one, the selected, or all. They parse, call the reports selectors or service, and render."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse

from portal.choices import Via
from portal.exceptions import PortalError, ValidationFailed, user_message
from reports.services import idle_vms_stop
from reports.tables import bars, csv_filename, idle_csv, usage_csv
from reports.usage import BY_CHOICES, idle_vms, period_parse, usage_report


class UsageForm(forms.Form):
    """The period picker: dates (the `to` day is included), or ISO date-times typed in the URL."""

    start = forms.CharField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.CharField(label="To (included)", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    by = forms.ChoiceField(label="Per", choices=[(b, b.capitalize()) for b in BY_CHOICES], initial="user",
                           required=False)


def _csv(text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def usage_view(request: HttpRequest) -> HttpResponse:
    """Usage per user, group or host over a period; `?format=csv` downloads the same table."""
    form = UsageForm(request.GET or None)
    context = {**admin.site.each_context(request), "title": "Usage reports", "subtitle": None, "form": form,
               "report": None, "idle_url": reverse("admin-reports-idle")}
    data = form.data if form.is_bound else {}
    try:
        period = period_parse(start=data.get("start") or None, end=data.get("end") or None)
        report = usage_report(actor=request.user, by=data.get("by") or "user", period=period)
    except ValidationFailed as exc:
        messages.error(request, user_message(exc, user=request.user))
        return TemplateResponse(request, "admin/reports/usage.html", context, status=400)
    except PortalError as exc:
        messages.error(request, user_message(exc, user=request.user))
        return TemplateResponse(request, "admin/reports/usage.html", context, status=exc.http_status)
    if request.GET.get("format") == "csv":
        return _csv(usage_csv(report), csv_filename("usage", report))
    query = request.GET.copy()
    query["format"] = "csv"
    top = report.top()
    chart = bars(top)
    context.update({
        "report": report, "csv_url": f"?{query.urlencode()}", "chart": chart, "chart_height": 22 * len(chart) + 4,
        "peak_labels": [p.label for p in report.rows[0].peaks] if report.rows else [],
    })
    return TemplateResponse(request, "admin/reports/usage.html", context)


def idle_view(request: HttpRequest) -> HttpResponse:
    """Idle VMs (low CPU for days): stop one, the selected, or all of them (POST); `?format=csv` downloads."""
    if request.method == "POST":
        ids = [request.POST["one"]] if request.POST.get("one") else request.POST.getlist("vm")
        try:
            wanted = None if request.POST.get("all") else [int(pk) for pk in ids]
            if wanted == []:
                raise ValidationFailed("Select the VMs to stop (or stop all).")
            results = idle_vms_stop(actor=request.user, via=Via.ADMIN, vm_ids=wanted)
        except ValueError:
            messages.error(request, "Select VMs by their ids.")
        except PortalError as exc:
            messages.error(request, user_message(exc, user=request.user))
        else:
            for result in results:
                (messages.success if result.stopped else messages.warning)(request, result.message)
            if not results:
                messages.info(request, "No VM is idle: nothing stopped.")
        return redirect("admin-reports-idle")
    try:
        items = idle_vms(actor=request.user)
    except PortalError as exc:
        messages.error(request, user_message(exc, user=request.user))
        items = []
    if request.GET.get("format") == "csv":
        return _csv(idle_csv(items), csv_filename("idle-vms"))
    context = {**admin.site.each_context(request), "title": "Idle VMs", "subtitle": None, "items": items,
               "usage_url": reverse("admin-reports-usage")}
    return TemplateResponse(request, "admin/reports/idle.html", context)
