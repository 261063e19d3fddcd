"""Sections that apps above vms add to the VM page (backups: its Backups panel), so vms never imports them.

An app registers a panel from its AppConfig.ready; vms/detail.html renders the registered panels
(`{% vm_panel_tabs %}`, `{% vm_panel_sections vm %}` from vms/templatetags/vm_panels.py) after its own.
(issue #11)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VMPanel:
    key: str  # the section's id (the tab links to #key)
    title: str
    template: str  # rendered with the page's context plus what `context(request, vm)` returns
    context: Callable[[Any, Any], dict]
    shows: Callable[[Any], bool] | None = None  # `shows(vm)`: whether this VM's page has the panel (None: all)


_panels: dict[str, VMPanel] = {}


def register_vm_panel(key: str, *, title: str, template: str, context: Callable[[Any, Any], dict],
                      shows: Callable[[Any], bool] | None = None) -> None:
    """Add (or replace: idempotent) a section of the VM page (`shows(vm)`: only on some VMs' pages)."""
    _panels[key] = VMPanel(key, title, template, context, shows)


def vm_panels(vm: Any = None) -> list[VMPanel]:
    """The panels of `vm`'s page (without a VM: every panel)."""
    return [p for p in _panels.values() if vm is None or p.shows is None or p.shows(vm)]
