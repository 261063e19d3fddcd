"""`manage.py vm`: the README's commands work as written, and errors have documented exit codes."""

from __future__ import annotations

import re
import shlex
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from portal import exceptions
from portal.models import Job
from vms.management.commands.vm import Command
from vms.models import VM, Flavor

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = ["--vcpus", "1", "--memory-mib", "128", "--disk-gib", "1"]


def vm_cmd(*args: str) -> str:
    out = StringIO()
    call_command("vm", *args, stdout=out)
    return out.getvalue()


def readme_vm_commands() -> list[list[str]]:
    """The argv (after `vm`) of every `manage.py vm …` line in the README's "Command line" code block."""
    readme = (settings.BASE_DIR / "README.md").read_text()
    section = readme.split("### Command line", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if "manage.py" in argv and argv[argv.index("manage.py") + 1:][:1] == ["vm"]:
            commands.append(argv[argv.index("manage.py") + 2:])
    return commands


# --- 5. the README's commands, as written -------------------------------------------------------

def test_the_readme_block_is_found_and_waits_after_the_subcommand():
    commands = readme_vm_commands()
    assert len(commands) >= 6
    assert commands[0] == ["--user", "demo", "create", "web-1", "--flavor", "tiny", "--wait"]


def test_every_command_line_example_of_the_readme_runs_as_written(test_host, make_user):
    make_user("demo", quota={"max_vms": 3, "max_vcpus": 4, "max_memory_mib": 2048, "max_disk_gib": 20})
    Flavor.objects.create(name="tiny", vcpus=1, memory_mib=128, disk_gib=1)

    outputs, verbs = [], []
    for argv in readme_vm_commands():
        verb = next(arg for arg in argv[2:] if not arg.startswith("--"))
        verbs.append(verb)
        if verb == "grow-disk":
            # libvirt's test driver cannot grow disks (no blockResize; growth is proven on qemu:///system
            # in test_disk.py): the command parses and reaches the service, which refuses with a conflict.
            assert _code(*argv) == (5, "The host of web-1 (testhost) cannot grow disks.")
            continue
        outputs.append(vm_cmd(*argv))

    assert {"create", "list", "stop", "grow-disk", "snapshot", "snapshots", "revert", "delete"} <= set(verbs)
    assert "Creating web-1." in outputs[0] and "succeeded 100%" in outputs[0]
    assert "before-upgrade" in "".join(outputs)
    vm = VM.objects.get(name="web-1")
    assert vm.status == "deleted"  # the last example deletes it, after waiting for each job


def test_wait_is_accepted_before_or_after_the_subcommand(test_host, alice):
    after = vm_cmd("--user", "alice", "create", "cli-1", *SMALL, "--wait")
    before = vm_cmd("--user", "alice", "--wait", "stop", "cli-1")
    neither = vm_cmd("--user", "alice", "start", "cli-1")

    assert "succeeded 100%" in after
    assert "succeeded 100%" in before
    assert "succeeded" not in neither and neither.startswith("Starting cli-1.")


# --- 6. exit codes ----------------------------------------------------------------------------

def _code(*args: str) -> tuple[int, str]:
    with pytest.raises(CommandError) as exc:
        vm_cmd(*args)
    return exc.value.returncode, str(exc.value)


def test_each_kind_of_error_has_its_exit_code(test_host, alice, bob, monkeypatch):
    assert _code("--user", "alice", "create", "Bad_Name", *SMALL)[0] == 2
    assert _code("--user", "alice", "grow-disk", "nope", "x")[0] == 3
    assert _code("--user", "nobody", "list") == (3, "No user 'nobody'.")
    vm_cmd("--user", "alice", "create", "mine", *SMALL)
    assert _code("--user", "bob", "stop", "mine") == (3, "No VM named 'mine'.")
    assert _code("--user", "alice", "grow-disk", "mine", "two")[0] == 2
    vm_cmd("--user", "alice", "stop", "mine")
    assert _code("--user", "alice", "pause", "mine")[0] == 5
    code, message = _code("--user", "alice", "create", "huge", "--vcpus", "4", "--memory-mib", "128",
                          "--disk-gib", "1")
    assert (code, message.startswith("Quota exceeded for vCPUs")) == (6, True)


@pytest.mark.parametrize(("error", "code"), [
    (exceptions.ValidationFailed("Bad."), 2),
    (exceptions.NotFound("Gone."), 3),
    (exceptions.PermissionDenied("Not yours."), 4),
    (exceptions.InvalidState("Busy."), 5),
    (exceptions.Conflict("Taken."), 5),
    (exceptions.QuotaExceeded(resource="VMs", requested=1, limit=0, in_use=0), 6),
    (exceptions.HypervisorUnavailable("Down."), 7),
    (exceptions.OperationFailed("Broke."), 7),
    (exceptions.PortalError("Other."), 1),
])
def test_the_exit_code_comes_from_the_error_class(alice, monkeypatch, error, code):
    def fail(**kwargs):
        raise error

    monkeypatch.setattr("vms.selectors.vm_list", fail)
    # The words are the error's sentence for this user, as on every door (plain words for the
    # hypervisor's errors, never their raw text), on stderr.
    assert _code("--user", "alice", "list") == (code, exceptions.user_message(error, user=alice))


def test_a_failed_job_exits_1_with_its_error(test_host, alice, monkeypatch):
    vm_cmd("--user", "alice", "create", "cli-1", *SMALL)
    job = Job.objects.create(kind="vm.stop", status="failed", error="The guest did not stop in time.")
    monkeypatch.setattr("vms.services.vm_action", lambda **kw: type("R", (), {"message": "Stopping.", "job": job}))

    assert _code("--user", "alice", "--wait", "stop", "cli-1") == (1, "The guest did not stop in time.")


def test_from_the_shell_the_message_goes_to_stderr_and_the_status_is_the_code(alice, capsys):
    with pytest.raises(SystemExit) as exc:
        Command().run_from_argv(["manage.py", "vm", "--user", "alice", "show", "nope"])

    captured = capsys.readouterr()
    assert exc.value.code == 3
    assert captured.err.strip() == "CommandError: No VM named 'nope'."
    assert captured.out == ""

    with pytest.raises(SystemExit) as usage:
        Command().run_from_argv(["manage.py", "vm", "--user", "alice", "frobnicate"])
    assert usage.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
