"""Concurrent requests gathered into shared ``generate`` calls, in one worker thread.

Requests wait in a bounded queue (``serve.max_queue``; full: the caller answers 429). The worker
takes the first waiting request, then gathers more for up to ``serve.max_wait_ms`` or until
``serve.max_batch_size`` sequences (a request's prompts x n) are waiting, and generates them.

**Grouping by settings.** Sampling settings (max_tokens, temperature, top_p, stop) apply to a
whole ``generate`` call, so the gathered requests are split into groups with equal settings and
each group is one call (length-sorted, left-padded batches of ``max_batch_size``); every request
still has its own prompts, hence its own preference. A request with a ``seed`` is generated
alone with that seed: its answer depends only on its prompt, settings and seed, never on what
else was queued, so it is reproducible. Unseeded groups are seeded from a counter (different
draws per call). Each request's future gets its own rows back, in order.

**Streaming.** A request submitted with ``on_token(row, token)`` gets each token of each of its
rows as it is generated (``generate`` reports tokens by position in the call's prompts, which
the worker maps back to the request and its own row), in the worker thread, before its future
is done.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from ric.config import GenerationConfig

OnToken = Callable[[int, int], None]


class QueueFull(Exception):
    """No room in the request queue."""


@dataclass(eq=False)
class Job:
    """One request's sequences, generated together with others of equal settings."""

    prompts: list[str]
    settings: GenerationConfig
    seeded: bool  # the request chose its seed: generated alone with ``settings.seed``
    on_token: OnToken | None = None  # (row of this job, token id) as each token is generated
    future: Future = field(default_factory=Future)  # (prepared, rows) or the request's error


def group_jobs(jobs: Sequence[Job]) -> list[list[Job]]:
    """Jobs that can share one generate call (equal settings; a seeded job alone), in order."""
    groups: dict[Any, list[Job]] = {}
    for job in jobs:
        key = job if job.seeded else repr(replace(job.settings, seed=0, batch_size=1))
        groups.setdefault(key, []).append(job)
    return list(groups.values())


def token_router(jobs: Sequence[Job]) -> OnToken | None:
    """``on_token(position, token)`` for one generate call over the prompts of ``jobs`` (in
    order): each token to its job's ``on_token`` with the job's own row; None if none streams."""
    owners = [(job.on_token, row) for job in jobs for row in range(len(job.prompts))]
    if not any(listener for listener, _ in owners):
        return None

    def route(position: int, token: int) -> None:
        listener, row = owners[position]
        if listener is not None:
            listener(row, token)

    return route


class Batcher:
    """The queue and the worker thread (see the module docstring).

    ``prepare(prompts, settings)`` runs per request in the worker before generation (a request
    it raises for fails alone; its result comes back with the rows); ``generate(prompts,
    settings, on_token)`` returns one row per prompt (``on_token``: see ``token_router``).
    """

    def __init__(
        self,
        prepare: Callable[[list[str], GenerationConfig], Any],
        generate: Callable[[list[str], GenerationConfig, OnToken | None], list[Any]],
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        seed: int,
    ) -> None:
        self._prepare = prepare
        self._generate = generate
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000
        self._queue: queue.Queue[Job] = queue.Queue(max_queue)
        self._seeds = itertools.count(seed)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.calls = 0  # generate calls made
        self.sequences = 0  # sequences generated (sequences / calls: the mean batch)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="ric-serve-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in progress, fail what still waits, end the worker."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        while not self._queue.empty():
            self._queue.get_nowait().future.set_exception(RuntimeError("the server is stopping"))

    def submit(
        self,
        prompts: list[str],
        settings: GenerationConfig,
        seeded: bool,
        on_token: OnToken | None = None,
    ) -> Future:
        """Queue one request; QueueFull when the queue is full."""
        job = Job(prompts, settings, seeded, on_token)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        return job.future

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            self._run(self._gather(first))

    def _gather(self, first: Job) -> list[Job]:
        jobs, rows = [first], len(first.prompts)
        deadline = time.monotonic() + self._max_wait_s
        while rows < self._max_batch_size and (left := deadline - time.monotonic()) > 0:
            try:
                job = self._queue.get(timeout=left)
            except queue.Empty:
                break
            jobs.append(job)
            rows += len(job.prompts)
        return jobs

    def _run(self, jobs: list[Job]) -> None:
        prepared: dict[Job, Any] = {}
        for job in jobs:
            try:
                prepared[job] = self._prepare(job.prompts, job.settings)
            except Exception as error:  # this request alone fails (the caller answers it)
                job.future.set_exception(error)
        for group in group_jobs([job for job in jobs if job in prepared]):
            seed = group[0].settings.seed if group[0].seeded else next(self._seeds)
            settings = replace(group[0].settings, batch_size=self._max_batch_size, seed=seed)
            try:
                prompts = [prompt for job in group for prompt in job.prompts]
                self.calls, self.sequences = self.calls + 1, self.sequences + len(prompts)
                rows = self._generate(prompts, settings, token_router(group))
            except Exception as error:  # answered to every request of the group, never lost
                for job in group:
                    job.future.set_exception(error)
                continue
            start = 0
            for job in group:
                job.future.set_result((prepared[job], rows[start : start + len(job.prompts)]))
                start += len(job.prompts)
