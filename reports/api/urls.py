from django.urls import path

from .views import IdleStopView, IdleView, UsageView

urlpatterns = [
    path("reports/usage/", UsageView.as_view(), name="api-report-usage"),
    path("reports/idle/", IdleView.as_view(), name="api-report-idle"),
    path("reports/idle/stop/", IdleStopView.as_view(), name="api-report-idle-stop"),
]
