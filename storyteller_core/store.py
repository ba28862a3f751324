"""Durable job state on diskcache: records, indexes, transitions and leases.

Values are plain dicts, never pickled class instances, so a record written by
one version of the code is readable by the next. Every read-modify-write runs
inside ``cache.transact()``, which is atomic across threads and processes.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import diskcache

from .jobs import STAGE_PROGRESS, Job, State, check_transition

_JOB = "job:"
_LEASE = "lease:"
_ALL = "index:all"
_UNFINISHED = "index:unfinished"


class JobNotFound(KeyError):
    pass


class JobStore:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        self.cache = diskcache.Cache(
            str(directory), eviction_policy="none", size_limit=2**62, timeout=60
        )
        for db_file in directory.glob("cache.db*"):  # the database, its WAL and shared memory
            db_file.chmod(0o600)

    def close(self) -> None:
        self.cache.close()

    # -- records ---------------------------------------------------------------
    def create(self, job: Job) -> Job:
        job.state_entered_at.setdefault(job.state.value, job.created_at)
        with self.cache.transact():
            self.cache.set(_JOB + job.id, job.to_dict())
            self._index_add(_ALL, job.id)
            self._index_add(f"index:batch:{job.batch_id}", job.id)
            self._index_add(f"index:sha:{job.sha256}", job.id)
            self._index_add("index:batches", job.batch_id)
            if not job.state.terminal:
                self._index_add(_UNFINISHED, job.id)
        return job

    def get(self, job_id: str) -> Job | None:
        data = self.cache.get(_JOB + job_id)
        return Job.from_dict(data) if data else None

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def mutate(self, job_id: str, change: Callable[[Job], None]) -> Job:
        """Apply ``change`` to the stored job atomically and write it back."""
        with self.cache.transact():
            job = self.require(job_id)
            change(job)
            job.updated_at = time.time()
            self.cache.set(_JOB + job_id, job.to_dict())
        return job

    def update(self, job_id: str, **fields: Any) -> Job:
        return self.mutate(job_id, lambda job: _assign(job, fields))

    def transition(self, job_id: str, new: State, **fields: Any) -> Job:
        """The one place a job changes state; raises TransitionError if not allowed."""

        def change(job: Job) -> None:
            check_transition(job.state, new)
            now = time.time()
            job.state = new
            job.state_entered_at[new.value] = now
            if new in STAGE_PROGRESS:
                job.progress = STAGE_PROGRESS[new]
            if new.terminal:
                job.completed_at = now
                job.cancel_requested = False
            else:
                job.completed_at = None
            _assign(job, fields)

        with self.cache.transact():
            job = self.mutate(job_id, change)
            (self._index_remove if new.terminal else self._index_add)(_UNFINISHED, job_id)
        return job

    def delete(self, job_id: str) -> None:
        with self.cache.transact():
            job = self.get(job_id)
            if job is None:
                return
            self.cache.delete(_JOB + job_id)
            self.cache.delete(_LEASE + job_id)
            self._index_remove(_ALL, job_id)
            self._index_remove(f"index:batch:{job.batch_id}", job_id)
            self._index_remove(f"index:sha:{job.sha256}", job_id)
            self._index_remove(_UNFINISHED, job_id)

    # -- look-ups --------------------------------------------------------------
    def job_ids(self) -> list[str]:
        return list(self.cache.get(_ALL, []))

    def jobs(self, ids: Iterable[str] | None = None) -> list[Job]:
        found = (self.get(i) for i in (self.job_ids() if ids is None else ids))
        return [job for job in found if job is not None]

    def batch_ids(self) -> list[str]:
        """Batch ids, newest first (ids start with their creation time)."""
        return sorted(self.cache.get("index:batches", []), reverse=True)

    def jobs_in_batch(self, batch_id: str) -> list[Job]:
        return self.jobs(self.cache.get(f"index:batch:{batch_id}", []))

    def jobs_by_sha(self, sha256: str) -> list[Job]:
        return self.jobs(self.cache.get(f"index:sha:{sha256}", []))

    def unfinished(self) -> list[Job]:
        """Jobs not yet COMPLETED, FAILED or CANCELLED, read through their own index."""
        ids = self.cache.get(_UNFINISHED)
        if ids is None:  # a data dir from before this index: build it once
            with self.cache.transact():
                ids = [job.id for job in self.jobs() if not job.state.terminal]
                self.cache.set(_UNFINISHED, ids)
        return [job for job in self.jobs(ids) if not job.state.terminal]

    # -- leases: one engine works a job at a time --------------------------------
    def claim(self, job_id: str, owner: str, ttl: float) -> bool:
        with self.cache.transact():
            lease = self.cache.get(_LEASE + job_id)
            if lease and lease["owner"] != owner and not _lease_stale(lease):
                return False
            self.cache.set(_LEASE + job_id, {"owner": owner, "expires": time.time() + ttl})
            return True

    def renew(self, job_ids: Iterable[str], owner: str, ttl: float) -> list[str]:
        """Extend the leases this owner still holds; return the ids it lost."""
        lost = []
        with self.cache.transact():
            for job_id in job_ids:
                lease = self.cache.get(_LEASE + job_id)
                if lease and lease["owner"] != owner:
                    lost.append(job_id)
                    continue
                self.cache.set(_LEASE + job_id, {"owner": owner, "expires": time.time() + ttl})
        return lost

    def release(self, job_id: str, owner: str) -> None:
        with self.cache.transact():
            lease = self.cache.get(_LEASE + job_id)
            if lease and lease["owner"] == owner:
                self.cache.delete(_LEASE + job_id)

    def _index_add(self, key: str, job_id: str) -> None:
        ids = self.cache.get(key, [])
        if job_id not in ids:
            self.cache.set(key, [*ids, job_id])

    def _index_remove(self, key: str, job_id: str) -> None:
        ids = self.cache.get(key, [])
        if job_id in ids:
            self.cache.set(key, [i for i in ids if i != job_id])


def _assign(job: Job, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if not hasattr(job, name):
            raise AttributeError(f"Job has no field {name!r}")
        setattr(job, name, value)


def make_owner_id(tag: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{tag}"


def _lease_stale(lease: dict[str, Any]) -> bool:
    """A lease is stale when it ran out, or its owner process on this host is dead."""
    if lease["expires"] < time.time():
        return True
    host, _, rest = lease["owner"].partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
