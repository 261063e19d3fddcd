"""Storage reads: the image library as a user sees it, and the image the KVM probe boots."""

from __future__ import annotations

from django.db.models import QuerySet

from cluster.services import ProbeBoot
from portal.actors import Actor, is_admin
from portal.exceptions import NotFound

from .models import Image


def image_list(*, user: Actor) -> QuerySet[Image]:
    """Images `user` may boot from: public ones, all for staff."""
    qs = Image.objects.select_related("pool")
    return qs if is_admin(user) else qs.filter(is_public=True)


def image_get(*, user: Actor, name_or_id: object) -> Image:
    """One image the user may see, by name or numeric id."""
    qs = image_list(user=user)
    text = str(name_or_id).strip()
    try:
        if text.isdigit():
            return qs.get(pk=int(text))
        return qs.get(name=text)
    except Image.DoesNotExist:
        raise NotFound(f"Image {text[:60]!r} not found.") from None


def image_probe_boot() -> ProbeBoot | None:
    """The direct-kernel image with a ready marker that the KVM probe boots (the default first)."""
    image = (Image.objects.filter(boot_mode=Image.BootMode.KERNEL).exclude(ready_marker="")
             .order_by("-is_default").first())
    if image is None:
        return None
    return ProbeBoot(kernel=image.kernel_path, initrd=image.initrd_path, ready_marker=image.ready_marker)
