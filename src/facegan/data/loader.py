"""Batches for training, straight from a prepared uint8 array.

There is no DataLoader and no per-image decoding: a batch is one fancy-index into the
memory-mapped array (the OS page cache keeps hot data in RAM, so memory does not grow with the
dataset), moved to the device as uint8 and only then turned into floats. Crop-free flips and
scaling happen on the device, batched.

The order is a pure function of (seed, step): epoch e uses ``randperm(N)`` seeded by (seed, e),
global batch s of the epoch is the s-th run of ``batch`` indices of it, and rank r of W takes the
r-th W-th of that batch (sorted). So resuming at any step needs no saved sampler state, data-parallel
ranks never see the same image in an epoch, and the images of a step are the same whatever the
number of ranks (resume on another world size continues the same data order).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch


class BatchSampler:
    """Deterministic, rank-aware batches of a (N, H, W, C) uint8 array.

    ``batch`` is the global batch (every rank's rows together); ``world`` must divide it.
    ``images`` is the memory-mapped array or a copy of it already on the device (a tensor); both
    give the same batches. ``subset`` restricts batches to those dataset indices (a training split
    that leaves held-out images untouched) without copying the array.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, batch: int, seed: int, rank: int = 0, world: int = 1,
                 subset: np.ndarray | None = None) -> None:
        self.images, self.batch, self.seed, self.rank, self.world = images, batch, seed, rank, world
        self.subset = torch.from_numpy(np.asarray(subset, dtype=np.int64)) if subset is not None else None
        self.size = len(self.subset) if self.subset is not None else len(images)
        if batch % world:
            raise ValueError(f"batch {batch} does not split over {world} ranks")
        self.per_rank = batch // world
        self.steps_per_epoch = self.size // batch
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> np.ndarray:
        """Dataset indices of this rank's batch at global step ``step`` (sorted for locality)."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(self.size, generator=g)
            self._order = order if self.subset is None else self.subset[order]
            self._epoch = epoch
        # sorted reads are faster on a memmap; the global batch is sorted before it is split, so the
        # ranks' rows laid end to end are the single-process batch, row for row (flips, label noise)
        batch = np.sort(self._order[pos * self.batch : (pos + 1) * self.batch].numpy())
        return batch[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]

    def load(self, step: int) -> torch.Tensor:
        """uint8 (B, H, W, C) tensor for ``step``, on the images' device (a copy, safe to keep)."""
        idx = self.indices(step)
        if isinstance(self.images, torch.Tensor):
            return self.images[torch.from_numpy(idx).to(self.images.device)]
        return torch.from_numpy(np.ascontiguousarray(self.images[idx]))


class Prefetcher:
    """Reads the next batch on a background thread while the current step computes.

    Torch kernels release the GIL, so the memmap read overlaps the step on the other cores.
    """

    def __init__(self, sampler: BatchSampler, device: torch.device) -> None:
        self.sampler, self.device = sampler, device
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: dict[int, Future] = {}

    def get(self, step: int, prefetch_next: bool = True) -> torch.Tensor:
        fut = self._pending.pop(step, None)
        x = fut.result() if fut is not None else self.sampler.load(step)
        if prefetch_next:
            self._pending[step + 1] = self._pool.submit(self.sampler.load, step + 1)
        pin = self.device.type == "cuda" and x.device.type == "cpu"  # resident data is already there
        return (x.pin_memory() if pin else x).to(self.device, non_blocking=pin)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def to_model_input(batch_u8: torch.Tensor, flip: bool = False, gen: torch.Generator | None = None,
                   channels_last: bool = False, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 (B, H, W, C) on the device → float (B, C, H, W) in [−1, 1], optionally h-flipped.

    ``rows`` (offset, total): the batch is rows offset… of a global batch of ``total``; the flips
    are drawn for the whole global batch and sliced, so they do not depend on the number of ranks.
    NHWC uint8 permuted to NCHW *is* the channels_last layout, so no copy is needed for it.
    """
    x = batch_u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if flip:
        lo, total = rows or (0, x.shape[0])
        mask = torch.rand(total, generator=gen, device=x.device)[lo : lo + x.shape[0]] < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def split(n: int, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) dataset indices: every ``holdout``-th image (0, k, 2k, …) is held out
    (the upscaler trains on the first and is measured on the second, by train-sr and upscale alike)."""
    held = np.arange(0, n, holdout)
    return np.setdiff1d(np.arange(n), held), held
