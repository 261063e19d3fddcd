"""The import graph is a contract: lint-imports (run by `make test`) refuses an upward import.

Proven on a copy of the tree with one deliberate upward import added, the way a scratch branch
would add it, so the check itself is shown to fail when it should.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("portal", "accounts", "quotas", "cluster", "storage", "networks", "vms", "consoles", "backups", "monitoring", "pools", "reports", "metrics", "clouds", "chatops")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dest: Path) -> None:
    for app in APPS:
        shutil.copytree(ROOT / app, dest / app, ignore=shutil.ignore_patterns("__pycache__", "migrations"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _lint(where: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=where, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("storage/_probe.py", "from vms.models import VM  # an upward import\n", "storage is not allowed to import vms"),
    ("portal/_probe.py", "from quotas.models import Quota  # the core importing an app\n",
     "portal is not allowed to import quotas"),
    ("cluster/_probe.py", "from quotas.models import Quota  # a sibling layer: independent\n",
     "cluster is not allowed to import quotas"),
    ("accounts/_probe.py", "from vms.models import VM  # keys sit below the VMs that use them\n",
     "accounts is not allowed to import vms"),
])
def test_an_upward_import_makes_the_contract_check_fail(tmp_path, module: str, line: str, broken: str):
    _copy_tree(tmp_path)
    clean = _lint(tmp_path)
    assert clean.returncode == 0, clean.stdout[-2000:]
    (tmp_path / module).write_text(line)
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "BROKEN" in result.stdout and broken in result.stdout
    probe = module.removesuffix(".py").replace("/", ".")
    assert probe in result.stdout, result.stdout[-2000:]  # the report names the offending module


def test_a_service_importing_a_door_breaks_the_rules_contract(tmp_path):
    _copy_tree(tmp_path)
    services = tmp_path / "quotas" / "services.py"
    services.write_text(services.read_text() + "\nfrom quotas.api import views  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode == 1
    assert "Rules never import doors" in result.stdout and "quotas.services -> quotas.api.views" in result.stdout


@pytest.mark.django_db
def test_lookups_by_id_take_ascii_digits_only():
    """"²".isdigit() is True but int("²") raises: every lookup by id or name answers "not found" instead."""
    from cluster.selectors import cluster_get, host_get
    from portal.exceptions import PortalError

    for lookup in (host_get, cluster_get):
        for key in ("²", "9" * 5000):
            with pytest.raises(PortalError):
                lookup(name_or_id=key)
