"""The example plugin of docs/scheduler.md ("Writing a plugin"), end to end.

tests/cluster/example_plugin.py is the doc's code block (checked identical here); the doc's own settings block
registers it (PORTAL_SCHEDULER_PLUGINS, with `mycompany.scheduling` read as `tests.cluster.example_plugin`)
and adds the `gpu_aware` policy (PORTAL_SCHEDULER_POLICIES). A cluster set to that policy through the admin's
service then places VMs made by vm_create with it (test:///default: the create job runs on the test driver),
and every explanation names the plugin's filter and weight.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from django.test import override_settings

from cluster.clusters import cluster_update
from cluster.models import Cluster, Host
from cluster.scheduler import NoHostAvailable, VMRequest, explain_text, policy_names, schedule
from cluster.scheduler import registry as scheduler_registry
from portal.models import Job
from tests.cluster import example_plugin
from vms import services
from vms.models import VM

pytestmark = pytest.mark.django_db

DOC = Path(__file__).resolve().parents[2] / "docs" / "scheduler.md"
DOC_MODULE = "mycompany.scheduling"


def _doc_block(first_line: str, lang: str = "python") -> str:
    """The doc's code block in `lang` that starts with `first_line`."""
    for block in re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"docs/scheduler.md has no {lang} block starting with {first_line!r}")


def _doc_settings() -> dict:
    """The doc's environment block as the settings read it (comma list; JSON), the module path pointing at
    the tested copy."""
    block = _doc_block("PORTAL_SCHEDULER_PLUGINS", lang="sh")
    assert DOC_MODULE in block
    env = dict(word.split("=", 1) for word in shlex.split(block.replace(DOC_MODULE + ".",
                                                                        example_plugin.__name__ + ".")))
    return {"SCHEDULER_PLUGINS": [p.strip() for p in env["PORTAL_SCHEDULER_PLUGINS"].split(",") if p.strip()],
            "SCHEDULER_POLICIES": json.loads(env["PORTAL_SCHEDULER_POLICIES"])}


def test_the_module_is_the_docs_example():
    doc = _doc_block(f"# {DOC_MODULE.replace('.', '/')}.py\n").split("\n", 1)[1]
    code = Path(example_plugin.__file__).read_text()
    header, body = code[:code.index("from ")], code[code.index("from "):]
    assert header.startswith("# The example plugin of docs/scheduler.md")
    assert body == doc, "tests/cluster/example_plugin.py and the example in docs/scheduler.md differ"


@pytest.fixture
def gpu_cluster(test_host, admin_user):
    """test_host (tagged gpu) and a synthetic plain host in one cluster whose policy is the doc's gpu_aware."""
    with override_settings(**_doc_settings()):
        scheduler_registry.reload()
        try:
            assert scheduler_registry.check_scheduler_plugins() == []  # manage.py check is clean
            assert "gpu_aware" in policy_names()
            Host.objects.filter(pk=test_host.pk).update(tags=["gpu"])
            plain = Host.objects.create(name="plain", uri="test:///synthetic/plain", status="up", memory_mib=8192,
                                        free_memory_mib=8192, cpus=4, cluster=test_host.cluster)
            cluster = cluster_update(actor=admin_user, via="admin", cluster=Cluster.objects.get(pk=test_host.cluster_id),
                                     policy="gpu_aware")
            yield cluster, Host.objects.get(pk=test_host.pk), plain
        finally:
            scheduler_registry.reload()
    scheduler_registry.reload()  # the built-ins only, for the next tests


def _filter(explanation: dict, name: str) -> dict:
    return next(f for f in explanation["filters"] if f["name"] == name)


def test_a_gpu_vm_is_placed_on_the_gpu_host_by_the_plugins_filter(gpu_cluster, alice):
    cluster, gpu_host, plain = gpu_cluster
    result = services.vm_create(actor=alice, via="api", name="gpu-train", vcpus=1, memory_mib=256, disk_gib=1,
                                start=False)
    assert result.vm.host == gpu_host
    job = Job.objects.get(pk=result.job.pk)
    placement = job.params["placement"]
    assert placement["policy"] == "gpu_aware" and placement["chosen"] == gpu_host.name
    assert _filter(placement, "gpu")["removed"] == {"plain": "has no GPU"}
    assert placement["weights"][gpu_host.name]["spare_gpu"] == 0.0  # a GPU VM: no penalty
    assert placement["factors"]["spare_gpu"] == 1.0
    assert f"Placed on {gpu_host.name}" in job.log and "(policy gpu_aware)" in job.log
    assert "Filter gpu removed 1: plain has no GPU." in explain_text(placement)


def test_other_vms_keep_off_the_gpu_host_by_the_plugins_weight(gpu_cluster, alice, admin_user):
    cluster, gpu_host, plain = gpu_cluster
    placement = schedule(request=VMRequest(vcpus=1, memory_mib=256, name="web"), cluster=cluster)
    assert placement.host == plain
    weights = placement.explanation["weights"]
    assert list(weights) == ["plain", gpu_host.name]
    assert weights[gpu_host.name]["spare_gpu"] == 40.0  # the policy's gpu_penalty (the plugin's default is 50)
    assert weights["plain"]["spare_gpu"] == 0.0
    # The penalty is a property of the cluster like any other, validated by the admin's service.
    cluster = cluster_update(actor=admin_user, via="admin", cluster=cluster, policy_properties={"gpu_penalty": 30})
    placement = schedule(request=VMRequest(vcpus=1, memory_mib=256, name="web"), cluster=cluster)
    assert placement.explanation["weights"][gpu_host.name]["spare_gpu"] == 30.0
    # With the plain host out of the way (disabled), a plain VM still lands on the GPU host: a weight only ranks.
    Host.objects.filter(pk=plain.pk).update(enabled=False)
    result = services.vm_create(actor=alice, via="api", name="web", vcpus=1, memory_mib=256, disk_gib=1, start=False)
    assert result.vm.host == gpu_host
    placement = Job.objects.get(pk=result.job.pk).params["placement"]
    assert placement["weights"][gpu_host.name]["spare_gpu"] == 30.0


def test_no_gpu_host_refuses_a_gpu_vm_with_the_plugins_headline(gpu_cluster, alice):
    cluster, gpu_host, plain = gpu_cluster
    Host.objects.filter(pk=gpu_host.pk).update(tags=[])
    with pytest.raises(NoHostAvailable) as caught:
        services.vm_create(actor=alice, via="api", name="gpu-infer", vcpus=1, memory_mib=256, disk_gib=1,
                           start=False)
    assert str(caught.value) == "No GPU host can take gpu-infer; ask an administrator."
    assert f"{gpu_host.name} has no GPU" in caught.value.hosts and "plain has no GPU" in caught.value.hosts
    assert _filter(caught.value.explanation, "gpu")["count"] == 2
    assert caught.value.http_status == 409
    assert not VM.objects.filter(name="gpu-infer").exists()
