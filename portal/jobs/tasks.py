"""The django.tasks task that carries a Job to a worker."""

from django.tasks import task


@task()
def execute_job(job_id: str) -> str | None:
    from . import run_job  # portal.jobs imports this module to enqueue: resolved at run time

    return run_job(job_id)
