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


_panels: dict[str, VMPanel] = {}


def register_vm_panel(key: str, *, title: str, template: str, context: Callable[[Any, Any], dict]) -> None:
    """Add (or replace: idempotent) a section of the VM page."""
    _panels[key] = VMPanel(key, title, template, context)


def vm_panels() -> list[VMPanel]:
    return list(_panels.values())
