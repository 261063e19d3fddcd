from django.urls import path

from . import views

app_name = "consoles"
urlpatterns = [
    path("vm/<int:pk>/screen/", views.screen_view, name="screen"),
    path("vm/<int:pk>/terminal/", views.terminal_view, name="terminal"),
    path("vm/<int:pk>/ticket/", views.ticket_view, name="ticket"),
    path("vm/<int:pk>/settings/", views.settings_view, name="settings"),
    path("vm/<int:pk>/shares/", views.share_create_view, name="share-create"),
    path("shares/<int:share_id>/revoke/", views.share_revoke_view, name="share-revoke"),
    path("share/<str:token>/", views.shared_screen_view, name="shared"),
    path("share/<str:token>/ticket/", views.shared_ticket_view, name="shared-ticket"),
    path("link/<str:token>/", views.console_link_view, name="link"),
]
