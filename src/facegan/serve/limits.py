"""Every bound of the service in one place, checked before a model is loaded (``facegan serve`` flags set them).

Kept free of FastAPI and pydantic so the CLI can show the defaults without the serve extra.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from facegan import checks
from facegan.errors import FaceganError

MAX_JSON_BYTES = 64 << 10  # a generate/interpolate body is a few hundred bytes; 64 KiB is generous


@dataclass(frozen=True)
class Limits:
    """Every bound of the service; ``facegan serve`` flags set them."""

    max_n: int = 64  # faces per generate request
    max_frames: int = 120  # frames per interpolate request
    max_batch: int = 64  # faces per forward pass of the micro-batcher
    max_wait_ms: float = 5.0  # how long a lone request waits for others to join its batch
    max_queue: int = 512  # faces waiting for the generator before requests get 503
    max_upload_mb: float = 10.0  # /v1/upscale body, MiB
    max_upload_pixels: int = 4096 * 4096  # /v1/upscale image, pixels (checked before decoding)
    max_upscaled_pixels: int = 4096 * 4096  # the upscaled result, pixels
    max_upscales: int = 16  # upscale jobs running or waiting before 503 (each holds its upload and image)

    def check(self) -> "Limits":
        """A one-line error for any bound that makes no sense, before a model is loaded."""
        checks.integer("--max-n", self.max_n, 1, 4096)
        checks.integer("--max-frames", self.max_frames, 2, 10_000)
        checks.integer("--max-batch", self.max_batch, 1, 4096)
        checks.number("--max-wait-ms", self.max_wait_ms, 0, 10_000)
        checks.integer("--max-queue", self.max_queue, 1, 1_000_000)
        checks.number("--max-upload-mb", self.max_upload_mb, 0, 1024, lo_open=True)
        checks.integer("--max-upscales", self.max_upscales, 1, 1024)
        if self.max_queue < max(self.max_n, self.max_frames):
            raise FaceganError(f"--max-queue {self.max_queue} is below --max-n {self.max_n} or --max-frames "
                               f"{self.max_frames}: the largest request could never be queued")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
