from django.urls import include, path

urlpatterns = [
    path("", include("vms.api.urls")),
    path("", include("consoles.api.urls")),
]
