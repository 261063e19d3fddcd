"""Account pages, under /account/."""

from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("keys/", views.sshkey_list_view, name="keys"),
    path("keys/<int:pk>/delete/", views.sshkey_delete_view, name="delete"),
]
