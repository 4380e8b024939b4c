"""Micro-batching: the latents of concurrent requests go through the generator in one forward pass.

A forward pass of 64 faces costs far less than 64 passes of one, so one worker thread owns the
generator and serves a bounded queue of jobs (a job: the latents of one request):

1. wait for a job; its arrival starts the clock;
2. collect more jobs until ``max_batch`` faces wait or ``max_wait_s`` has passed since the first
   arrived — a lone request waits at most ``max_wait_s``;
3. render up to ``max_batch`` faces, taken from the head of the queue (a big job spans several
   passes), and hand each job its rows once all of them are done.

A pass is padded (with zero latents, whose faces are dropped) to 1, 2, 4 or the next multiple of
8, at most ``max_batch``: the generator then only ever sees a handful of batch shapes, so the memory that
oneDNN and the allocator keep per shape is reached at start-up (:meth:`Batcher.warm_up`) instead
of creeping up as new sizes appear — 1…64 distinct sizes cost 140 MB on dcgan64
(docs/benchmarks.md). A face does not depend on its batch, so padding never changes one.

The queue holds at most ``max_queue`` faces; :meth:`Batcher.submit` refuses more with
:class:`QueueFull` at once (the service answers 503 with Retry-After), so memory is bounded
whatever the load.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
import torch


class QueueFull(Exception):
    """The queue cannot take the job now; retry later."""


class _Job:
    __slots__ = ("z", "taken", "parts", "future")

    def __init__(self, z: torch.Tensor) -> None:
        self.z = z
        self.taken = 0  # rows handed to a forward pass so far
        self.parts: list[np.ndarray] = []
        self.future: Future[np.ndarray] = Future()


class Batcher:
    """One worker thread rendering queued latents in batches of up to ``max_batch`` faces."""

    def __init__(self, render: Callable[[torch.Tensor], np.ndarray], max_batch: int = 64, max_wait_s: float = 0.005,
                 max_queue: int = 512, on_batch: Callable[[int], None] | None = None) -> None:
        self._render, self.max_batch, self.max_wait_s, self.max_queue = render, max_batch, max_wait_s, max_queue
        self._on_batch = on_batch or (lambda n: None)
        self._jobs: deque[_Job] = deque()
        self._waiting = 0  # faces queued and not yet rendered
        self._first_arrival = 0.0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="facegan-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Faces waiting to be rendered."""
        return self._waiting

    def sizes(self) -> list[int]:
        """The batch shapes a forward pass can have: 1, 2, 4, then multiples of 8, up to max_batch
        (at most 7 padded faces per pass; 11 shapes for max_batch 64)."""
        return sorted({s for s in (1, 2, 4, *range(8, self.max_batch, 8)) if s < self.max_batch} | {self.max_batch})

    def warm_up(self, z_dim: int) -> None:
        """Run every batch shape once (before serving): the first requests do not pay for it."""
        for size in self.sizes():
            self._render(torch.zeros(size, z_dim))

    @property
    def alive(self) -> bool:
        """Whether the worker thread is serving (false once closed, or if it died)."""
        return self._thread.is_alive() and not self._closed

    def submit(self, z: torch.Tensor) -> Future[np.ndarray]:
        """Queue latents (n, z_dim); the future gives their faces, uint8 (n, H, W, C), in order."""
        n = len(z)
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if self._waiting + n > self.max_queue:
                raise QueueFull(f"{self._waiting} faces are queued (at most {self.max_queue})")
            job = _Job(z)
            if not self._jobs:
                self._first_arrival = time.monotonic()
            self._jobs.append(job)
            self._waiting += n
            self._cond.notify()
        return job.future

    def close(self) -> None:
        """Stop the worker; jobs still queued fail with QueueFull."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)
        for job in self._jobs:
            job.future.set_exception(QueueFull("the server is shutting down"))
        self._jobs.clear()

    def _take(self) -> list[tuple[_Job, int, int]] | None:
        """The next batch as (job, first row, end row) slices, once it is full or its wait is over."""
        with self._cond:
            while not self._closed:
                if self._jobs:
                    left = self._first_arrival + self.max_wait_s - time.monotonic()
                    if self._waiting >= self.max_batch or left <= 0:
                        break
                    self._cond.wait(left)
                else:
                    self._cond.wait()
            if self._closed:
                return None
            batch, room = [], self.max_batch
            for job in self._jobs:
                m = min(room, len(job.z) - job.taken)
                batch.append((job, job.taken, job.taken + m))
                job.taken += m
                room -= m
                if room == 0:
                    break
            while self._jobs and self._jobs[0].taken == len(self._jobs[0].z):
                self._jobs.popleft()
            self._waiting -= self.max_batch - room
            if self._jobs:  # what is left has waited already: the next pass starts at once
                self._first_arrival = time.monotonic() - self.max_wait_s
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            z = torch.cat([job.z[a:b] for job, a, b in batch])
            n = len(z)
            padded = next(size for size in self.sizes() if size >= n)
            if padded > n:
                z = torch.cat([z, z.new_zeros(padded - n, z.shape[1])])
            try:
                faces = self._render(z)[:n]
            except BaseException as e:  # noqa: BLE001 - the requests in this batch fail, the server stays up
                for job, _, _ in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            self._on_batch(n)
            at = 0
            for job, a, b in batch:
                job.parts.append(faces[at : at + b - a])
                at += b - a
                if b == len(job.z) and not job.future.done():
                    job.future.set_result(np.concatenate(job.parts) if len(job.parts) > 1 else job.parts[0])
