"""What a job does, in the words of the buttons that start it: registered by the apps that own the kinds."""

from __future__ import annotations

_labels: dict[str, str] = {}


def register_job_labels(labels: dict[str, str]) -> None:
    """Add labels for job kinds ("vm.force_off" → "Force off")."""
    _labels.update(labels)


def job_labels() -> dict[str, str]:
    return dict(_labels)


def job_label(kind: str) -> str:
    """The label of a kind; unknown kinds read as 'Snapshot create' from 'snapshot.create'."""
    if kind in _labels:
        return _labels[kind]
    return kind.split(".", 1)[-1].replace(".", " ").replace("_", " ").capitalize()
