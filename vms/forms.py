"""Web forms for VMs: they only parse what the browser sent; every rule lives in vms.services.

Fields are deliberately permissive (plain text, nothing required) so that the service's messages,
the same for the web, the API and Slack, are the ones people read.
"""

from __future__ import annotations

from django import forms

from .validation import DESCRIPTION_MAX, NAME_HELP, NAME_RE

CUSTOM = "custom"

# The name rule as an HTML `pattern` (anchored by the browser; `-` escaped for the `v` flag that
# browsers compile patterns with). The server stays the authority; this only guides typing.
NAME_PATTERN_HTML = NAME_RE.pattern.removeprefix("^").removesuffix("$").replace("-]", r"\-]")


class VMCreateForm(forms.Form):
    name = forms.CharField(required=False, strip=False, help_text=NAME_HELP)  # the service refuses "vm "
    flavor = forms.CharField(required=False)
    vcpus = forms.CharField(required=False, label="vCPUs")
    memory_mib = forms.CharField(required=False, label="Memory (MiB)")
    disk_gib = forms.CharField(required=False, label="Disk (GiB)")
    image = forms.CharField(required=False)
    group = forms.CharField(required=False, label="Team")
    description = forms.CharField(required=False, strip=False, widget=forms.Textarea,
                                  max_length=DESCRIPTION_MAX * 2)
    # Ticked networks (ids), one NIC each. The page always sends `networks_shown`, so an unticked list
    # means "no NIC"; a post without it (no such section) leaves the choice to the service (the default).
    networks = forms.Field(required=False, widget=forms.MultipleHiddenInput)
    networks_shown = forms.CharField(required=False, widget=forms.HiddenInput)
    user_data = forms.CharField(required=False, strip=False, widget=forms.Textarea, label="cloud-init user-data")
    clone = forms.CharField(required=False)  # thin (default) or full, for templates
    storage_domain = forms.CharField(required=False, label="Storage domain")  # blank: the host's own pool
    lease_days = forms.CharField(required=False, label="Lease (days)")  # blank: the group's default (issue #14)

    def __init__(self, *args, flavors=(), images=(), networks=(), default_network=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flavors = list(flavors)
        self.images = list(images)
        self.networks = list(networks)
        if not self.is_bound:
            default_image = next((i for i in self.images if i.is_default), self.images[0] if self.images else None)
            self.initial.setdefault("image", str(default_image.pk) if default_image else "")
            self.initial.setdefault("flavor", self.flavors[0].name if self.flavors else CUSTOM)
            self.initial.setdefault("networks", [str(default_network.pk)] if default_network is not None else [])

    def selected_networks(self) -> set[str]:
        """The ids ticked on the page (the default network's before the first post)."""
        return {str(v) for v in (self["networks"].value() or []) if v}

    def service_kwargs(self) -> dict:
        """The arguments for vms.services.vm_create: a flavor name, or the three custom sizes."""
        data = self.cleaned_data
        kwargs = {"name": data["name"], "description": data["description"], "image": data["image"] or None,
                  "group": data["group"] or None, "user_data": data["user_data"] or "",
                  "clone": data["clone"] or None}
        if data["storage_domain"]:
            kwargs["storage_domain"] = data["storage_domain"]
        if data["lease_days"]:
            kwargs["lease_days"] = data["lease_days"]
        if data["networks_shown"]:
            chosen = data["networks"] or []
            kwargs["networks"] = [v for v in ([chosen] if isinstance(chosen, str) else chosen) if v]
        if data["flavor"] and data["flavor"] != CUSTOM:
            kwargs["flavor"] = data["flavor"]
        else:
            kwargs.update(vcpus=data["vcpus"], memory_mib=data["memory_mib"], disk_gib=data["disk_gib"])
        return kwargs


class VMUpdateForm(forms.Form):
    name = forms.CharField(required=False, strip=False, help_text=NAME_HELP)  # the service refuses "vm "
    description = forms.CharField(required=False, strip=False, widget=forms.Textarea,
                                  max_length=DESCRIPTION_MAX * 2)


class VMTemplateForm(forms.Form):
    """Make template: the new template's name and how it is shown and shared (vms.services decides)."""

    name = forms.CharField(required=False, label="Template name")
    title = forms.CharField(required=False)
    description = forms.CharField(required=False, strip=False, widget=forms.Textarea,
                                  max_length=DESCRIPTION_MAX * 2)
    visibility = forms.CharField(required=False)
    groups = forms.Field(required=False, widget=forms.MultipleHiddenInput)
    library = forms.BooleanField(required=False)

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        chosen = data["groups"] or []
        return {"name": data["name"], "title": data["title"], "description": data["description"],
                "visibility": data["visibility"] or "private",
                "groups": [g for g in ([chosen] if isinstance(chosen, str) else chosen) if g],
                "library": bool(data["library"])}


# --- disks (issue #11) ---------------------------------------------------------------------------

class DiskAddForm(forms.Form):
    """Add a disk: a new blank one (size, bus, label, flags, storage domain) or an existing data disk
    (`volume`). Plain fields: vms.disks.vm_disk_add says what is wrong."""

    source = forms.CharField(required=False)  # "new" (default) or "existing"
    size_gib = forms.CharField(required=False, label="Size (GiB)")
    bus = forms.CharField(required=False)
    label = forms.CharField(required=False, strip=False)
    readonly = forms.BooleanField(required=False, label="Read-only")
    shareable = forms.BooleanField(required=False)
    pool = forms.CharField(required=False, label="Storage domain")
    volume = forms.CharField(required=False, label="Data disk")

    def service_kwargs(self) -> dict:
        d = self.cleaned_data
        kwargs: dict = {"bus": d["bus"] or "virtio", "readonly": bool(d["readonly"])}
        if d["source"] == "existing":
            kwargs["volume"] = d["volume"] or ""
        else:
            kwargs.update(size_gib=d["size_gib"], label=d["label"], shareable=bool(d["shareable"]),
                          pool=d["pool"] or None)
        return kwargs


def posted_properties(data, fields, current: dict | None) -> dict[str, object]:
    """The properties a properties form changed: `prop_<name>` values that differ from `current`
    ("" clears one). Only the catalog's fields are read."""
    current = current or {}
    changed: dict[str, object] = {}
    for field in fields:
        key = f"prop_{field.name}"
        if key not in data:
            continue
        value = str(data.get(key, "")).strip()
        old = current.get(field.name)
        if value == ("" if old is None else str(old)):
            continue
        changed[field.name] = value
    return changed


class VMBulkCreateForm(forms.Form):
    """Create several VMs (issue #14): a name pattern, a count and one VM's choices (vms.bulk decides)."""

    name_pattern = forms.CharField(required=False, strip=False, label="Name pattern")
    count = forms.CharField(required=False, label="How many")
    start_number = forms.CharField(required=False, label="First number")
    flavor = forms.CharField(required=False)
    vcpus = forms.CharField(required=False, label="vCPUs")
    memory_mib = forms.CharField(required=False, label="Memory (MiB)")
    disk_gib = forms.CharField(required=False, label="Disk (GiB)")
    image = forms.CharField(required=False)
    group = forms.CharField(required=False, label="Team")
    clone = forms.CharField(required=False)
    description = forms.CharField(required=False, strip=False, widget=forms.Textarea, max_length=DESCRIPTION_MAX * 2)
    start = forms.BooleanField(required=False, initial=True, label="Start them")
    partial = forms.BooleanField(required=False, label="As many as fit")

    def service_kwargs(self) -> dict:
        """The arguments for vms.bulk.vm_bulk_create: a flavor name, or the three custom sizes."""
        data = self.cleaned_data
        kwargs = {"name_pattern": data["name_pattern"], "count": data["count"],
                  "start_number": data["start_number"] or 1, "image": data["image"] or None,
                  "group": data["group"] or None, "clone": data["clone"] or None,
                  "description": data["description"], "start": bool(data["start"]),
                  "partial": bool(data["partial"])}
        if data["flavor"] and data["flavor"] != CUSTOM:
            kwargs["flavor"] = data["flavor"]
        else:
            kwargs.update(vcpus=data["vcpus"], memory_mib=data["memory_mib"], disk_gib=data["disk_gib"])
        return kwargs
