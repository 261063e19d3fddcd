"""The load benchmark's Django side (benchmarks/bench_load.py): the seed and the framework's floor.

- `seed()`: rows only (nothing calls the hypervisor; no libvirt domain is made): one test-driver host row
  with an image row, the users, the VMs and their finished jobs (these three by bulk_create), and an API
  token for the measured user.
- `bare_vm_list`: the same first page of 50 VMs as `GET /api/vms/` (the same selector, so the same
  visibility rule, order and queries for the count and the page), as JSON through `values()` and
  `JsonResponse`: no DRF view, serializer, renderer or pagination class. It authenticates by the same API
  token (one lookup, like DRF's TokenAuthentication), so both do the same database work and what differs
  is the framework. Served only by benchmarks/urls_load.py (benchmarks/settings_load.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from cluster.models import Host
from portal.choices import JobStatus, Via
from portal.models import Job
from storage.models import Image, StoragePool
from vms.choices import VMStatus
from vms.models import VM
from vms.selectors import vm_list

PAGE_SIZE = 50
# The VMSerializer's own columns (related rows by name, like its slug fields); no NICs: the seed has none.
BARE_FIELDS = ("id", "uuid", "name", "description", "status", "power_state", "owner__username", "group__name",
               "host__name", "image__name", "flavor__name", "vcpus", "memory_mib", "disk_gib", "domain_name",
               "created_via", "last_error", "created_at", "updated_at", "status_changed_at", "cdrom_drive",
               "highly_available")


@dataclass
class Seeded:
    user: User
    token: str
    host: Host
    vm_ids: list[int] = field(default_factory=list)  # the measured user's VMs


def seed(*, vms: int = 10_000, owned: int = 2_000, other_users: int = 200, jobs_per_vm: int = 2,
         username: str = "bench-user", host_uri: str = "test:///default", batch_size: int = 2_000) -> Seeded:
    """`vms` VM rows on one test-driver host row: `owned` of them the user `username`'s, the rest spread
    over `other_users` users; `jobs_per_vm` finished jobs each. Returns the user, an API token and ids."""
    if not 0 <= owned <= vms or (other_users < 1 and owned < vms):
        raise ValueError("owned must be within vms, and other users must exist to own the rest")
    users = get_user_model().objects
    unusable = make_password(None)  # one hash for all: create_user would hash 200 passwords
    user = users.create(username=username, password=unusable)
    others = users.bulk_create([users.model(username=f"{username}-{i:03}", password=unusable)
                                for i in range(other_users)], batch_size=batch_size)
    host = Host.objects.create(name="bench-load", uri=host_uri, status="up", enabled=True, cpus=64,
                               memory_mib=512 * 1024)
    # Every VM made from one image (VMs are; an adopted VM has none, which the web list cannot show today).
    pool = StoragePool.objects.create(host=host, name="bench-load", path="/var/lib/vmportal/bench-load")
    image = Image.objects.create(name="bench-load-image", title="Bench image", pool=pool, volume_name="bench.qcow2",
                                 path="/var/lib/vmportal/bench-load/bench.qcow2")
    owners = itertools.chain(itertools.repeat(user, owned), itertools.cycle(others))
    statuses = itertools.cycle([VMStatus.RUNNING] * 4 + [VMStatus.STOPPED])
    rows = []
    for i, owner in zip(range(vms), owners, strict=False):
        status = next(statuses)
        rows.append(VM(name=f"vm-{i:05}", owner=owner, host=host, image=image, vcpus=1 + i % 2,
                       memory_mib=512 * (1 + i % 4), disk_gib=10, status=status, power_state=status, domain_name=f"vmpbench-{i:05}",
                       created_via=Via.API))
    created = VM.objects.bulk_create(rows, batch_size=batch_size)
    now = timezone.now()
    kinds = itertools.cycle(["vm.create", "vm.start", "vm.stop"])
    Job.objects.bulk_create(
        [Job(kind=next(kinds), status=JobStatus.SUCCEEDED, progress=100, actor_id=vm.owner_id, via=Via.API,
             target_type="vm", target_id=str(vm.pk), target_name=vm.name, started_at=now, finished_at=now)
         for vm in created for _ in range(jobs_per_vm)], batch_size=batch_size)
    token = Token.objects.create(user=user)
    return Seeded(user=user, token=token.key, host=host, vm_ids=[vm.pk for vm in created if vm.owner_id == user.pk])


def session_for(user: User) -> str:
    """A signed-in session for `user` (what the login form would leave), by its key: the web page's cookie."""
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    assert store.session_key is not None
    return store.session_key


def bare_vm_list(request: HttpRequest) -> JsonResponse:
    """The first page of the API token holder's VMs, `{"count", "results"}`, without DRF."""
    kind, _, key = request.headers.get("Authorization", "").partition(" ")
    token = Token.objects.select_related("user").filter(key=key).first() if kind == "Token" and key else None
    if token is None or not token.user.is_active:
        return JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
    vms = vm_list(user=token.user)
    return JsonResponse({"count": vms.count(), "results": list(vms.values(*BARE_FIELDS)[:PAGE_SIZE])})
