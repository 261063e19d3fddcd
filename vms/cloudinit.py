"""cloud-init NoCloud seeds: meta-data, user-data (the owner's SSH keys, plus optional user-data given
at create) and network-config, on a small ISO labelled `cidata` that the VM gets as a read-only disk.

Pure functions of a VM's rows: the create job builds the seed and uploads it into the VM's pool.
"""

from __future__ import annotations

import io
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pycdlib
import yaml

from accounts.selectors import authorized_keys

from .models import VM
from .validation import USER_DATA_KINDS

SEED_LABEL = "cidata"



def meta_data(vm: VM) -> str:
    return yaml.safe_dump({"instance-id": f"iid-{vm.uuid}", "local-hostname": vm.name}, sort_keys=False)


def network_config(vm: VM) -> str:
    """Version 2 network-config: every NIC the VM has at first boot takes DHCP, matched by MAC."""
    ethernets = {}
    for index, nic in enumerate(vm.nics.order_by("created_at", "id")):
        ethernets[f"nic{index}"] = {"match": {"macaddress": nic.mac}, "set-name": f"eth{index}", "dhcp4": True}
    return yaml.safe_dump({"version": 2, "ethernets": ethernets}, sort_keys=False)


def base_cloud_config(vm: VM) -> dict:
    """What the portal asks of every cloud-init guest: its name, its login user with the owner's keys."""
    keys = authorized_keys(vm.owner)
    image = vm.image
    login = (image.login_user if image is not None else "") or "portal"
    return {
        "hostname": vm.name,
        "preserve_hostname": False,
        "manage_etc_hosts": True,
        "ssh_pwauth": False,
        "disable_root": True,
        "users": [{
            "name": login,
            "gecos": f"{vm.owner.get_username()} (VM portal)",
            "groups": ["sudo"],
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": True,
            "ssh_authorized_keys": keys,
        }],
    }


def user_data(vm: VM) -> str:
    """The portal's #cloud-config; with user-data given at create, a MIME multipart of both (cloud-init
    merges the parts: the user's own document can add packages, files, commands)."""
    ours = "#cloud-config\n" + yaml.safe_dump(base_cloud_config(vm), sort_keys=False)
    if not vm.user_data.strip():
        return ours
    theirs = vm.user_data
    first = theirs.lstrip()
    subtype = next((kind for prefix, kind in USER_DATA_KINDS.items() if first.startswith(prefix)), "text/plain")
    message = MIMEMultipart()
    for name, text, mime in (("portal.cfg", ours, "text/cloud-config"), ("user-data", theirs, subtype)):
        part = MIMEText(text, mime.split("/", 1)[1], "utf-8")
        part.add_header("Content-Disposition", "attachment", filename=name)
        # Merged into the portal's part, never replacing it: a user document with its own `users:`
        # adds users; the login user with the owner's keys stays.
        part.add_header("Merge-Type", "list(append)+dict(no_replace,recurse_list)+str()")
        message.attach(part)
    return message.as_string()


def seed_documents(vm: VM) -> dict[str, str]:
    return {"meta-data": meta_data(vm), "user-data": user_data(vm), "network-config": network_config(vm)}


def seed_iso(documents: dict[str, str]) -> bytes:
    """An ISO 9660 image with Joliet and Rock Ridge names, volume id `cidata` (what NoCloud looks for)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    for index, (name, text) in enumerate(sorted(documents.items())):
        data = text.encode("utf-8")
        iso.add_fp(io.BytesIO(data), len(data), f"/FILE{index};1", rr_name=name, joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def build_seed(vm: VM) -> bytes:
    return seed_iso(seed_documents(vm))
