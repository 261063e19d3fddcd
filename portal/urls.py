"""The project URL conf: assembles each app's pages, API and admin (see docs/architecture.md)."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from vms.admin import dashboard_view

urlpatterns = [
    # Staff-only operations dashboard (before admin.site.urls, whose catch-all would take it).
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("portal.api_urls")),
    path("jobs/", include("portal.jobs.urls")),
    path("account/", include("accounts.urls")),
    path("quotas/", include("quotas.urls")),
    path("networks/", include("networks.urls")),
    path("images/", include("storage.urls")),
    path("consoles/", include("consoles.urls")),
    path("backups/", include("backups.urls")),  # issue #11
    path("slack/", include("chatops.urls")),
    path("", include("vms.urls")),
]
