"""The identity filters of ``/v1/generate``: ``"filter": "face"`` and ``"filter": "private"``.

- ``face``: only faces in which dlib's detector finds exactly one face (facegan.faceset's first check);
- ``private``: also nobody from the training photos (identity distance ≥ the server's
  ``--privacy``) and no face twice in one response. It needs the training set's descriptors,
  loaded when the server starts with ``--privacy-check`` (computed once per dataset and cached:
  39 s for 10k faces on 2 cores), so a request never waits for them.

The faces are checked as the generator makes them, before any ``"upscale"`` (``facegan dataset
--upscale`` checks the upscaled face instead). Cost per candidate face on the machine of
docs/benchmarks.md: the detector ≈1.4 ms and the embedding ≈4 ms, beside ≈2 ms to generate it —
cheap enough to offer per request, not free, so filtered requests take turns (one batch at a time:
the detectors are shared; at most :data:`MAX_WAITING` wait, more get 503) while unfiltered ones
keep the micro-batcher to themselves. With ``seed`` and ``n`` the server walks on from ``start``
until ``n`` faces pass or :data:`TRIES_PER_FACE` × n candidates were tried; with ``seeds`` each
seed's face 0 is checked. Every rejected candidate is named with its reason.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool

from facegan import saved
from facegan.errors import FaceganError
from facegan.faceset import Sieve, Verdict, training_data
from facegan.identity import DUPLICATE, SAME_PERSON, Inspector, training_bank
from facegan.serve.batcher import QueueFull

TRIES_PER_FACE = 8  # candidates tried per face asked for, at most
MAX_WAITING = 16  # filtered requests running or waiting before 503
SERVE_WITHOUT = "serve without --privacy-check (then only \"filter\": \"face\" is offered)"


class Filters:
    """The detector and embedding of one server, and the training identities when it checks privacy."""

    def __init__(self, bank: np.ndarray | None = None, privacy: float = SAME_PERSON) -> None:
        self.bank, self.privacy = bank, privacy
        self._inspector: Inspector | None = None
        self._made = threading.Lock()
        self._lock = asyncio.Lock()
        self.waiting = 0

    @classmethod
    def load(cls, source: str | Path, train_data: str | Path | None, privacy: float) -> Filters:
        """Filters with the training identities of ``source``'s training set (``train_data`` where the
        model's own record of it is not on this machine), computed or read from the cache now."""
        model = saved.open(source)
        prepared = training_data(model, train_data, model.generator(), without=SERVE_WITHOUT)
        filters = cls(None, privacy)
        filters.bank = training_bank(prepared, filters.inspector(), progress=True)
        return filters

    def inspector(self) -> Inspector:
        with self._made:  # two first requests at once make one
            if self._inspector is None:  # dlib missing: the request gets the extra's one line (400)
                self._inspector = Inspector(purpose="the generate filters")
            return self._inspector

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of MAX_WAITING places for a filtered request: QueueFull (503) when none is free."""
        if self.waiting >= MAX_WAITING:
            raise QueueFull(f"{MAX_WAITING} filtered requests are already waiting")
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1

    def sieve(self, kind: str) -> Sieve:
        """A fresh sieve for one request with filter ``kind`` ("face" or "private")."""
        if kind == "private" and self.bank is None:
            raise FaceganError('"filter": "private" needs the training identities: start the server with --privacy-check')
        private = kind == "private"  # "face": no training identities, and no duplicate distance
        return Sieve(self.inspector(), self.bank if private else None, duplicate=DUPLICATE if private else 0.0,
                     privacy=self.privacy)

    async def sift(self, sieve: Sieve, images: np.ndarray, limit: int) -> list[Verdict]:
        """``sieve``'s verdicts on ``images`` up to the ``limit``-th that passes, one request's batch at a time."""
        async with self._lock:
            return await run_in_threadpool(sieve.sift, images, limit)

    def close(self) -> None:
        with self._made:
            if self._inspector is not None:
                self._inspector.__exit__()
                self._inspector = None
