"""Storage reads: the image library as a user sees it, the image the KVM probe boots, and the images
the portal can build."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import Group
from django.db.models import BigIntegerField, Exists, ExpressionWrapper, F, OuterRef, Q, QuerySet, Sum

from cluster.models import Host
from cluster.services import ProbeBoot
from portal.actors import Actor, is_admin
from portal.choices import JobStatus
from portal.exceptions import NotFound
from portal.models import Job

from .models import Image, ImageCopy, Volume
from .recipes import RECIPES, Recipe
from .services import GIB, IMAGE_BUILD


def image_visible(*, user: Actor) -> QuerySet[Image]:
    """The one visibility rule for images: staff (and the system) see all; a user sees public images, their own, and
    images shared with a group they belong to (an EXISTS, so no DISTINCT over whole rows)."""
    qs = Image.objects.all()
    if user is None or is_admin(user):  # None: the system itself (set-up, the CLI without --user)
        return qs
    if not getattr(user, "is_authenticated", False):
        return qs.filter(visibility=Image.Visibility.PUBLIC)
    shared = Image.groups.through.objects.filter(image_id=OuterRef("pk"), group__user=getattr(user, "pk", None))
    return qs.filter(Q(visibility=Image.Visibility.PUBLIC) | Q(owner=user)
                     | Q(visibility=Image.Visibility.GROUP) & Exists(shared))


def image_list(*, user: Actor) -> QuerySet[Image]:
    """Images `user` may boot from or use (see image_visible)."""
    return image_visible(user=user).select_related("pool", "owner")


def image_get(*, user: Actor, name_or_id: object) -> Image:
    """One image the user may see, by name or numeric id."""
    qs = image_list(user=user)
    text = str(name_or_id).strip()
    try:
        # "²" is a digit to isdigit(), not to int(); an id has at most 18 digits (int() refuses 4300+)
        if text.isascii() and text.isdigit() and len(text) <= 18:
            return qs.get(pk=int(text))
        return qs.get(name=text)
    except Image.DoesNotExist:
        raise NotFound(f"Image {text[:60]!r} not found.") from None


def image_quota_usage(*, user: Actor = None, group: Group | None = None) -> dict[str, int]:
    """What a user's own images charge to their personal disk quota (registered with quotas): each image
    its virtual size in whole GiB, rounded up. Library images and groups are not charged."""
    user_id = getattr(user, "pk", None)
    if group is not None or user_id is None:
        return {}
    # Integer division on both SQLite and PostgreSQL: (bytes + GiB - 1) // GiB.
    per_image = ExpressionWrapper((F("size_bytes") + (GIB - 1)) / GIB, output_field=BigIntegerField())
    total = Image.objects.filter(owner_id=user_id).aggregate(gib=Sum(per_image))["gib"]
    return {"disk_gib": int(total or 0)}


def _copy_on(image: Image, host: Host) -> ImageCopy | None:
    """The image's complete copy on `host` (storage.copies), or None (on its own host: none needed)."""
    if image.pool.host_id == host.pk:
        return None
    return ImageCopy.objects.filter(image=image, pool__host=host).exclude(path="").first()


def image_boot_files(*, image: Image, host: Host) -> tuple[str, str]:
    """The kernel and initrd a VM on `host` boots for a direct-kernel image: those of the image's copy on
    that host, else (its own host, or no copy made yet) the image's own files ("" when it has none)."""
    copy = _copy_on(image, host)
    if copy is not None:
        return copy.kernel_path, copy.initrd_path
    return image.kernel_path, image.initrd_path


def image_media_path(*, image: Image, host: Host) -> str:
    """Where an ISO is for a CD-ROM drive of a VM on `host`: its copy there, else its own volume."""
    copy = _copy_on(image, host)
    return copy.path if copy is not None else image.path


def image_probe_boot() -> ProbeBoot | None:
    """The direct-kernel image with a ready marker that the KVM probe boots (the default first)."""
    image = (Image.objects.filter(boot_mode=Image.BootMode.KERNEL).exclude(ready_marker="")
             .order_by("-is_default").first())
    if image is None:
        return None
    return ProbeBoot(kernel=image.kernel_path, initrd=image.initrd_path, ready_marker=image.ready_marker)


@dataclass(frozen=True)
class RecipeState:
    """What an administrator sees of a buildable image: registered already, being built, or neither."""

    recipe: Recipe
    image: Image | None
    job: Job | None  # the image build queued or running, if any


def image_recipe_states() -> list[RecipeState]:
    """Every recipe (storage.recipes) with its image, if registered, and the image build in progress."""
    images = {i.name: i for i in Image.objects.filter(name__in=list(RECIPES))}
    active = Job.objects.filter(kind=IMAGE_BUILD, status__in=JobStatus.ACTIVE).order_by("created_at")
    jobs: dict[str, Job] = {}
    for job in active:
        jobs.setdefault(str(job.params.get("recipe", "")), job)
    return [RecipeState(recipe=r, image=images.get(name), job=jobs.get(name)) for name, r in RECIPES.items()]


# --- data disks (issue #11) ------------------------------------------------------------------------

def data_volume_quota_usage(*, user: Actor = None, group: Group | None = None) -> dict[str, int]:
    """What data disks charge to a disk quota (registered with quotas): each its size, to its group's quota
    when it has a group, else to its owner's. A VM's boot disk and seed have no owner: the VM's own
    disk_gib counts them (vms), so nothing is counted twice."""
    if group is not None:
        qs = Volume.objects.filter(group=group)
    elif getattr(user, "pk", None) is not None:
        qs = Volume.objects.filter(owner_id=user.pk, group__isnull=True)  # type: ignore[union-attr]
    else:
        return {}
    total = qs.filter(owner__isnull=False).aggregate(gib=Sum("capacity_gib"))["gib"]
    return {"disk_gib": int(total or 0)}
