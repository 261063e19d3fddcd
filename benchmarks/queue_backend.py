"""A django.tasks backend for benchmarks: each enqueued job id goes onto an in-process queue that the
benchmark's worker threads take from (a db_worker's pick-up without its polling delay)."""

from __future__ import annotations

import queue

from django.tasks.backends.dummy import DummyBackend

JOBS: queue.Queue[str | None] = queue.Queue()


class QueueBackend(DummyBackend):
    def _store_result(self, result) -> None:
        super()._store_result(result)
        JOBS.put(result.args[0])
