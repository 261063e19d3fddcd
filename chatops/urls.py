"""Slack endpoint and the account-link pages, under /slack/ (see portal/urls.py)."""

from django.urls import path
from django.views.generic import RedirectView

from . import views

app_name = "chatops"
urlpatterns = [
    # Slash commands, interactivity (buttons) and events all arrive here, signed by Slack.
    path("events", views.slack_events, name="events"),
    path("link/<str:token>/", views.link_view, name="link"),
    # One-time console links moved to consoles (/consoles/link/<token>/); links handed out before still work.
    path("console/<str:token>/", RedirectView.as_view(pattern_name="consoles:link", query_string=False),
         name="console"),
    # The quota-request pages moved to /quotas/requests/; links already sent in Slack still work.
    path("quota-requests/", RedirectView.as_view(pattern_name="quotas:requests", permanent=True)),
]
