"""The in-process job registry: one queued-or-running job per namespace, a bound on
jobs running at once, progress from the store's callback, watchers for server-sent
events, a bounded history.

A job is an asyncio task awaiting :meth:`StoreOperations.run_job` on the server's
loop; the store calls ``progress`` on that loop after each committed batch. Stopping
a job (one stop, or the server shutting down) cancels its task: the batch in flight
commits whole or not at all, every batch before it stays, and the store's jobs
resume when run again, so a stopped job loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from kmsbox_admin.errors import JobConflict, describe_error
from kmsbox_admin.operations import Caller, JobSpec, StoreOperations

__all__ = ["FINISHED", "Job", "JobRegistry"]

log = logging.getLogger("kmsbox_admin.jobs")

#: States a job ends in.
FINISHED = frozenset({"succeeded", "failed", "stopped"})
#: The scope of a job on the whole store: it excludes every other job.
_STORE = "*"


@dataclass(eq=False)
class Job:
    """One job: what, for whom, its state and progress, and its report or typed error."""

    id: str
    spec: JobSpec
    actor: str
    created_at: float
    state: str = "queued"
    done: int = 0
    total: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    stop_requested: bool = False
    revision: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def scope(self) -> str:
        """The namespace it works on, or ``*`` for the whole store."""
        return self.spec.namespace or _STORE

    @property
    def finished(self) -> bool:
        """Whether it has ended (succeeded, failed or stopped)."""
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (what the API returns and each SSE event carries)."""
        return {
            "id": self.id,
            "kind": self.spec.kind,
            "namespace": self.spec.namespace,
            "params": self.spec.to_dict(),
            "actor": self.actor,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "stop_requested": self.stop_requested,
            "result": self.result,
            "error": self.error,
            "revision": self.revision,
        }

    def touch(self) -> None:
        """Record a change and wake every watcher."""
        self.revision += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class JobRegistry:
    """Starts, tracks and stops jobs; runs at most ``running`` at once (the others stay
    queued); keeps the last ``history`` finished ones. Use it on one event loop."""

    def __init__(self, operations: StoreOperations, *, history: int = 100, running: int = 2) -> None:
        if not 1 <= running <= 64:
            raise ValueError("running must be from 1 to 64")
        self._ops = operations
        self._history = history
        self._slots = asyncio.Semaphore(running)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.closing = False

    def all(self) -> list[Job]:
        """Every job kept, newest first."""
        return list(reversed(self._jobs.values()))

    def get(self, job_id: str) -> Job | None:
        """The job with this id, if it is still kept."""
        return self._jobs.get(job_id)

    def _active(self) -> list[Job]:
        return [j for j in self._jobs.values() if not j.finished]

    def start(self, caller: Caller, spec: JobSpec) -> Job:
        """Queue a job (already checked by ``operations.check_job``).

        Raises JobConflict when a job on the same namespace, or a store-wide one,
        is queued or running (a store-wide job also waits for every other).
        """
        if self.closing:
            raise JobConflict("the server is shutting down")
        scope = spec.namespace or _STORE
        for other in self._active():
            if scope == _STORE or other.scope in (_STORE, scope):
                where = "the whole store" if other.scope == _STORE else f"namespace {other.scope!r}"
                raise JobConflict(f"job {other.id} ({other.spec.kind}) is already {other.state} on {where}")
        job = Job(secrets.token_hex(8), spec, caller.actor, time.time())
        self._jobs[job.id] = job
        self._tasks[job.id] = asyncio.get_running_loop().create_task(self._run(caller, job), name=f"job-{job.id}")
        self._trim()
        return job

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished]
        for job in finished[: max(0, len(finished) - self._history)]:
            del self._jobs[job.id]

    def stop(self, job_id: str) -> Job | None:
        """Stop a job by cancelling its task; None if there is no such job."""
        job = self._jobs.get(job_id)
        if job is not None and not job.finished and not job.stop_requested:
            job.stop_requested = True
            task = self._tasks.get(job.id)
            if task is not None:
                task.cancel()
            job.touch()
        return job

    async def _run(self, caller: Caller, job: Job) -> None:
        try:
            async with self._slots:
                job.result = await self._ops.run_job(
                    caller,
                    job.spec,
                    lambda done, total: self._progress(job, done, total),
                    lambda: self._started(job),
                )
            job.state = "succeeded"
        except asyncio.CancelledError:
            job.state = "stopped"
            job.error = {
                "type": "JobStopped",
                "code": "stopped",
                "message": "stopped; every committed batch stays: run the same job again to resume it",
            }
            task = asyncio.current_task()
            if not job.stop_requested or task is None or task.uncancel() > 0:
                raise  # not a stop of ours: the loop itself is going away
        except Exception as exc:
            job.state = "failed"
            job.error = describe_error(exc)
            log.warning("job %s (%s) failed: %s", job.id, job.spec.kind, job.error["message"])
        finally:
            job.finished_at = time.time()
            self._tasks.pop(job.id, None)
            job.touch()
            self._trim()

    def _started(self, job: Job) -> None:
        if job.state == "queued":
            job.state = "running"
            job.started_at = time.time()
            job.touch()

    def _progress(self, job: Job, done: int, total: int | None) -> None:
        if job.finished:
            return
        self._started(job)
        job.done, job.total = done, total
        job.touch()

    async def watch(self, job: Job, heartbeat: float = 15.0) -> AsyncIterator[dict[str, Any] | None]:
        """The job's state now and after every change, until it ends; ``None`` as a
        heartbeat when nothing changed for ``heartbeat`` seconds."""
        while True:
            changed = job._changed  # taken before the snapshot, so no change is missed
            yield job.to_dict()
            if job.finished or self.closing:
                return
            try:
                await asyncio.wait_for(changed.wait(), timeout=heartbeat)
            except TimeoutError:
                yield None

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every job and wait for their tasks to end (at most ``timeout`` seconds)."""
        self.closing = True
        for job in self._active():
            self.stop(job.id)
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
