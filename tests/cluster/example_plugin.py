# The example plugin of docs/scheduler.md ("Writing a plugin"), where it is shown as mycompany/scheduling.py.
# Keep the two identical: tests/cluster/test_scheduler_example.py compares them and runs this one.
from cluster.scheduler import VMRequest
from cluster.scheduler.base import Context, Filter, HostView, Weight


class GpuFilter(Filter):
    """VMs whose name starts with "gpu-" need a host tagged "gpu"."""

    name = "gpu"
    description = "GPU VMs only on GPU hosts."
    refusal = "No GPU host can take {name}"   # the refusal's headline when this filter removed the most hosts

    def check(self, host: HostView, request: VMRequest, ctx: Context) -> str | None:
        if request.name.startswith("gpu-") and "gpu" not in host.tags:
            return "has no GPU"                 # read after the host's name: "host-a has no GPU"
        return None


class SpareGpuWeight(Weight):
    """Keep GPU hosts free for GPU VMs: other VMs prefer hosts without a GPU."""

    name = "spare_gpu"
    properties = {"gpu_penalty": 50}

    def score(self, host: HostView, request: VMRequest, ctx: Context) -> float:
        if "gpu" in host.tags and not request.name.startswith("gpu-"):
            return float(ctx.prop("gpu_penalty", host) or 50)
        return 0.0
