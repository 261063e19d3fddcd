"""The project URL conf: assembles each app's pages, API and admin (see docs/architecture.md)."""

from urllib.parse import urlparse

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.decorators.csp import csp_override
from drf_spectacular.settings import spectacular_settings
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from metrics.views import metrics_view
from portal.health import healthz_view, readyz_view
from reports.admin import idle_view, usage_view
from vms.admin import dashboard_view


def _api_docs_view():
    """Swagger UI loads its bundle from drf-spectacular's CDN: the CSP allows that origin on this page only
    (the split view serves its start-up script from here, so no inline script is needed)."""
    view = SpectacularSwaggerSplitView.as_view(url_name="api-schema")
    if not settings.SECURE_CSP:
        return view
    dist = urlparse(spectacular_settings.SWAGGER_UI_DIST)
    cdn = f"{dist.scheme}://{dist.netloc}" if dist.netloc else None
    if cdn is None:
        return view
    policy = {key: list(value) for key, value in settings.SECURE_CSP.items()}
    for directive in ("script-src", "style-src", "img-src"):
        policy[directive] = [*policy.get(directive, []), cdn]
    return csp_override(policy)(view)


urlpatterns = [
    # Probes for load balancers and supervisors (portal/health.py; issue #13).
    path("healthz", healthz_view, name="healthz"),
    path("readyz", readyz_view, name="readyz"),
    # Prometheus exposition, token-protected; 404 while PORTAL_METRICS_TOKEN is unset (metrics/; issue #14).
    path("metrics", metrics_view, name="metrics"),
    # Staff-only operations dashboard (before admin.site.urls, whose catch-all would take it).
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    # Usage reports and idle VMs (issue #14), staff only like the dashboard.
    path("admin/reports/usage/", admin.site.admin_view(usage_view), name="admin-reports-usage"),
    path("admin/reports/idle/", admin.site.admin_view(idle_view), name="admin-reports-idle"),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", _api_docs_view(), name="api-docs"),
    path("api/", include("portal.api_urls")),
    path("jobs/", include("portal.jobs.urls")),
    path("account/", include("accounts.urls")),
    path("quotas/", include("quotas.urls")),
    path("networks/", include("networks.urls")),
    path("images/", include("storage.urls")),
    path("consoles/", include("consoles.urls")),
    path("backups/", include("backups.urls")),  # issue #11
    path("pools/", include("pools.urls")),  # issue #14
    path("slack/", include("chatops.urls")),
    path("", include("vms.urls")),
]
