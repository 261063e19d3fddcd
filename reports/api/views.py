"""Reports API (administrators): usage per user, group or host over a period, idle VMs and stopping them.
JSON by default; CSV with `?format=csv` or `Accept: text/csv`. Errors are always JSON (403 for non-admins,
400 for a bad period)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.choices import Via
from portal.exceptions import ValidationFailed
from reports.services import idle_vms_stop
from reports.tables import csv_filename, idle_csv, idle_values, usage_csv, usage_values
from reports.usage import BY_CHOICES, idle_vms, period_parse, usage_report


class CSVRenderer(BaseRenderer):
    """text/csv: the view hands over the CSV text itself (reports.tables)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: dict[str, Any] | None = None) -> bytes:
        return data.encode() if isinstance(data, str) else b""


class _ReportView(APIView):
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, CSVRenderer]

    def handle_exception(self, exc: Exception) -> Response:
        # Refusals and bad input are JSON even when CSV was asked for (a client reads the reason, not a blank file).
        if isinstance(getattr(self.request, "accepted_renderer", None), CSVRenderer):
            self.request.accepted_renderer = JSONRenderer()
            self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)

    def wants_csv(self, request: Request) -> bool:
        return isinstance(request.accepted_renderer, CSVRenderer)

    @staticmethod
    def csv_response(text: str, filename: str) -> Response:
        return Response(text, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


PERIOD_PARAMETERS = [
    OpenApiParameter("from", OpenApiTypes.STR, description="Start: a date (2026-12-01) or an ISO date-time. "
                     "Default: seven days before `to`."),
    OpenApiParameter("to", OpenApiTypes.STR, description="End (excluded): a date (that whole day included) or "
                     "an ISO date-time. Default: now."),
]


class UsageView(_ReportView):
    """Usage per user, group or host over [from, to): VM-hours, vCPU-hours, memory and disk GiB-hours, average
    CPU, and peak use (the highest hourly average) against quota limits or host capacity. Largest first."""

    @extend_schema(parameters=[*PERIOD_PARAMETERS, OpenApiParameter("by", OpenApiTypes.STR, enum=BY_CHOICES),
                               OpenApiParameter("top", OpenApiTypes.INT, description="Only the first N rows.")],
                   responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        period = period_parse(start=request.query_params.get("from"), end=request.query_params.get("to"))
        report = usage_report(actor=request.user, by=request.query_params.get("by", "user"), period=period)
        top = request.query_params.get("top")
        rows = report.rows
        if top:
            if not (top.isascii() and top.isdigit() and len(top) <= 6) or int(top) < 1:  # "²".isdigit() is True
                raise ValidationFailed("'top' must be a positive whole number.", field="top")
            rows = rows[: int(top)]
        if self.wants_csv(request):
            return self.csv_response(usage_csv(replace(report, rows=rows)), csv_filename("usage", report))
        return Response({
            "by": report.by, "from": period.start, "to": period.end,
            "resolutions": [{"from": p.start, "to": p.end, "resolution": p.resolution} for p in report.plan],
            "totals": {k: round(v, 3) for k, v in report.totals.items()},
            "results": [usage_values(r) for r in rows],
        })


class IdleView(_ReportView):
    """Running VMs whose average CPU stayed below `cpu_pct` (default PORTAL_IDLE_CPU_PCT) over the last `days`
    days (default PORTAL_IDLE_DAYS), with samples covering enough of that time. Quietest first."""

    @extend_schema(parameters=[OpenApiParameter("cpu_pct", OpenApiTypes.FLOAT),
                               OpenApiParameter("days", OpenApiTypes.FLOAT)],
                   responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        items = idle_vms(actor=request.user, cpu_pct=_number(request, "cpu_pct"), days=_number(request, "days"))
        if self.wants_csv(request):
            return self.csv_response(idle_csv(items), csv_filename("idle-vms"))
        return Response({"count": len(items), "results": [idle_values(i) for i in items]})


def _number(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValidationFailed(f"{name!r} must be a number.", field=name) from None


class IdleStopSerializer(serializers.Serializer):
    vms = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=10_000,
                                help_text="The VMs to stop (ids); left out: every idle VM. VMs not idle are left alone.")
    cpu_pct = serializers.FloatField(required=False, help_text="Idle threshold as for the list (default PORTAL_IDLE_CPU_PCT).")
    days = serializers.FloatField(required=False, help_text="Idle window as for the list (default PORTAL_IDLE_DAYS).")


class IdleStopView(_ReportView):
    """Stop idle VMs (each a `vm.stop` job, audited): the ones listed, or every idle VM."""

    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]

    @extend_schema(request=IdleStopSerializer, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        body = IdleStopSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        results = idle_vms_stop(actor=request.user, via=Via.API, vm_ids=data.get("vms"), cpu_pct=data.get("cpu_pct"),
                                days=data.get("days"))
        return Response({"stopped": sum(r.stopped for r in results), "results": [r.as_dict() for r in results]},
                        status=202)
