"""The image verbs of the command line: `manage.py image …` and `manage.py vm --user U image …` share them.

    import SOURCE --name N [--title T] [--format F] [--kind K] [--owner U] [--visibility V] [--group G]
           [--sha256 H] [--host H] [--description D] [--os-name O] [--cloud-init] [--login-user U] [--wait]
    list
    delete NAME

SOURCE is an http(s) URL or a file on the portal server inside IMAGE_IMPORT_DIRS (administrators).
Errors are PortalErrors; the commands turn them into stderr and the exit status of their kind.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from cluster.models import Host
from portal.actors import Actor
from portal.choices import Via
from portal.exceptions import NotFound
from portal.models import Job

from . import imageio, selectors, services
from .imports import image_import
from .models import Image


@dataclass(frozen=True)
class Outcome:
    """What a verb printed and the job it queued, if any."""

    message: str
    job: Job | None = None


def add_image_verbs(parser: Any) -> None:
    """Add the `import`, `list` and `delete` subcommands to `parser` (dest `image_verb`)."""
    sub = parser.add_subparsers(dest="image_verb", required=True)
    imp = sub.add_parser("import", help="Import an image from a URL or a file on the portal server (a job).")
    imp.add_argument("source", help="An http:// or https:// URL, or a file inside the import directories.")
    imp.add_argument("--name", required=True)
    imp.add_argument("--title", default="")
    imp.add_argument("--format", dest="fmt", default=None, choices=[*imageio.FORMATS, *imageio.CONTAINERS],
                     help="What the file is (default: detected); refused if it is something else.")
    imp.add_argument("--kind", default=None, choices=Image.Kind.values)
    imp.add_argument("--owner", default=None, help="Administrators: import into this user's space (default: library).")
    imp.add_argument("--visibility", default=None, choices=Image.Visibility.values)
    imp.add_argument("--group", action="append", default=[], dest="groups", help="A group that may use it (repeatable).")
    imp.add_argument("--sha256", default=None, help="The file's expected SHA-256.")
    imp.add_argument("--host", default=None, help="Store it on this host (default: the first enabled one).")
    imp.add_argument("--description", default="")
    imp.add_argument("--os-name", default="")
    imp.add_argument("--cloud-init", action="store_true")
    imp.add_argument("--login-user", default="")
    imp.add_argument("--min-disk-gib", type=int, default=1)
    sub.add_parser("list", help="Images you may use (administrators: all).")
    sub.add_parser("delete", help="Delete an image (yours; administrators: any) and its stored file.") \
        .add_argument("name")
    for verb_parser in sub.choices.values():
        verb_parser.add_argument("--wait", action="store_true", default=argparse.SUPPRESS,
                                 help="Wait for the job to finish.")


def run_image_verb(actor: Actor, opts: dict[str, Any], write: Any) -> Outcome | None:
    """Run the image verb in `opts` as `actor` (None: the system); `write` prints a line."""
    verb = opts["image_verb"]
    if verb == "list":
        for image in selectors.image_list(user=actor):
            who = image.owner.username if image.owner else "library"
            write(f"{image.pk:>5}  {image.name:<28} {image.kind:<8} {image.format:<6} "
                  f"{image.size_bytes / 1024**3:>7.2f} GiB  {image.visibility:<8} {who}")
        return None
    if verb == "delete":
        image = selectors.image_get(user=actor, name_or_id=opts["name"])
        services.image_delete(actor=actor, via=Via.CLI, image=image)
        return Outcome(f"Deleted image {image.name} and its stored file.")
    source: str = opts["source"].strip()
    is_url = "://" in source
    owner = None
    if opts.get("owner"):
        owner = get_user_model().objects.filter(username=opts["owner"]).first()
        if owner is None:
            raise NotFound(f"No user {opts['owner']!r}.")
    host = None
    if opts.get("host"):
        host = Host.objects.filter(name=opts["host"]).first()
        if host is None:
            raise NotFound(f"No host {opts['host']!r}.")
    groups = []
    for name in opts.get("groups") or []:
        group = Group.objects.filter(name=name).first()
        if group is None:
            raise NotFound(f"No group {name!r}.")
        groups.append(group)
    job = image_import(
        actor=actor, via=Via.CLI, source="url" if is_url else "path", url=source if is_url else None,
        path=None if is_url else source, sha256=opts.get("sha256"), name=opts["name"], title=opts.get("title", ""),
        fmt=opts.get("fmt"), kind=opts.get("kind"), visibility=opts.get("visibility"), groups=groups, host=host,
        owner=owner, description=opts.get("description", ""), os_name=opts.get("os_name", ""),
        cloud_init=bool(opts.get("cloud_init")), login_user=opts.get("login_user", ""),
        min_disk_gib=opts.get("min_disk_gib") or 1)
    return Outcome(f"Importing image {opts['name']}.", job)
