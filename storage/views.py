"""The image library's web pages: the images a user may use (with upload and URL import forms that
speak to the REST API: tus uploads at /api/uploads/, imports at /api/images/import/), one image with
its fields, and the owner's or an administrator's edit and delete. Thin: selectors to read,
storage.services to change; domain errors become messages through portal.web."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.actors import is_admin
from portal.choices import Via
from portal.exceptions import PortalError, ValidationFailed
from portal.live import live_context
from portal.web import form_error, portal_view

from .forms import ImageUpdateForm
from .models import Image
from .selectors import image_get, image_list
from .services import image_check_manage, image_delete, image_update

PAGE_SIZE = 50
KINDS = [("", "All kinds"), *Image.Kind.choices]


def _groups_for(user, image: Image | None = None) -> QuerySet[Group]:
    """Groups the user may share an image with: all for administrators, else their own (plus the
    image's current ones, so keeping them is possible)."""
    if is_admin(user):
        return Group.objects.order_by("name")
    query = Q(user=user)
    if image is not None:
        query |= Q(images=image)
    return Group.objects.filter(query).distinct().order_by("name")


def _can_manage(user, image: Image) -> bool:
    try:
        image_check_manage(actor=user, image=image, verb="change")
    except PortalError:
        return False
    return True


@login_required
@require_GET
@portal_view
def image_list_view(request: HttpRequest) -> HttpResponse:
    """The library: every image the user may use (or only theirs), by kind, with the upload forms."""
    kind = request.GET.get("kind", "")
    kind = kind if kind in Image.Kind.values else ""
    mine = request.GET.get("mine") == "1"
    search = request.GET.get("q", "").strip()[:100]
    images = image_list(user=request.user).prefetch_related("groups").order_by("-created_at", "name")
    if kind:
        images = images.filter(kind=kind)
    if mine:
        images = images.filter(owner=request.user)
    if search:
        images = images.filter(Q(name__icontains=search) | Q(title__icontains=search))
    page = Paginator(images, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "storage/list.html", {
        "page": page,
        "images": list(page),
        "kind": kind,
        "kinds": KINDS,
        "mine": mine,
        "search": search,
        "filtered": bool(kind or search),
        "visibility_choices": Image.Visibility.choices,
        # Administrators import into the library (for everyone); users into their own space (for them).
        "default_visibility": Image.Visibility.PUBLIC if is_admin(request.user) else Image.Visibility.PRIVATE,
        "groups": list(_groups_for(request.user)),
        "chunk_bytes": settings.IMAGE_UPLOAD_CHUNK_BYTES,
        "max_bytes": settings.IMAGE_MAX_BYTES,
        **live_context(),
    })


def _detail(request: HttpRequest, image: Image, *, form: ImageUpdateForm | None = None,
            status: int = 200) -> HttpResponse:
    can_manage = _can_manage(request.user, image)
    if form is None and can_manage:
        form = ImageUpdateForm(initial={"title": image.title, "description": image.description,
                                        "visibility": image.visibility, "groups": list(image.groups.all())},
                               groups=_groups_for(request.user, image))
    return render(request, "storage/detail.html", {
        "image": image,
        "image_groups": list(image.groups.order_by("name")),
        "can_manage": can_manage,
        "form": form,
        "selected_groups": {str(pk) for pk in (form["groups"].value() or [])} if form else set(),
    }, status=status)


@login_required
@require_GET
@portal_view(fallback="storage:images")
def image_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    """One image: every field, and (for its owner and administrators) edit and delete."""
    return _detail(request, image_get(user=request.user, name_or_id=pk))


@login_required
@require_POST
@portal_view(fallback="storage:images")
def image_update_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Change an image's title, description, visibility and groups; errors next to the fields."""
    image = image_get(user=request.user, name_or_id=pk)
    form = ImageUpdateForm(request.POST, groups=_groups_for(request.user, image))
    if form.is_valid():
        data = form.cleaned_data
        try:
            image = image_update(actor=request.user, via=Via.WEB, image=image, title=data["title"],
                                 description=data["description"], visibility=data["visibility"],
                                 groups=list(data["groups"]))
        except ValidationFailed as exc:  # anything else (not yours, gone) is a message and a redirect
            form_error(form, exc, user=request.user)
        else:
            messages.success(request, f"Saved image {image.name}.")
            return redirect("storage:image", pk=image.pk)
    return _detail(request, image, form=form, status=400)


@login_required
@require_POST
@portal_view(fallback="storage:images")
def image_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete an image (confirmed in the page first); a refusal (in use, not yours) comes back as a message."""
    image = image_get(user=request.user, name_or_id=pk)
    name = image.name
    image_delete(actor=request.user, via=Via.WEB, image=image)
    messages.success(request, f"Deleted image {name}.")
    return redirect("storage:images")
