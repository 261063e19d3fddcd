"""Web pages for VM pools (the REST API lives under /api/, see pools/api/)."""

from django.urls import path

from . import views

app_name = "pools"
urlpatterns = [
    path("", views.pool_list_view, name="list"),
    path("vm/<int:vm_id>/return/", views.pool_return_view, name="return"),
    path("<slug:name>/", views.pool_detail_view, name="detail"),
    path("<slug:name>/take/", views.pool_take_view, name="take"),
]
