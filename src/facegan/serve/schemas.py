"""What the service accepts: the request bodies, within the server's :class:`~facegan.serve.limits.Limits`.

Request bodies are strict: unknown fields, strings for numbers and out-of-range values are
refused with a 422 that names the field, before any work is queued. The bounds that flags can
change (n, frames) are built into the models — and so into the OpenAPI schema — per app.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from facegan.checks import SEED_MAX
from facegan.serve.filters import TRIES_PER_FACE
from facegan.serve.limits import Limits

Seed = Annotated[int, Field(ge=0, le=SEED_MAX, description="0 … 2³² − 1")]
Truncation = Annotated[float | None, Field(gt=0, le=100, description=(
    "ψ: latent components beyond ±ψ standard deviations are redrawn within it (smaller: more typical "
    "faces; e.g. 0.7). Omit or null for off."))]

def request_models(limits: Limits) -> tuple[type[BaseModel], type[BaseModel]]:
    """(GenerateRequest, InterpolateRequest) with this server's bounds."""

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

    class GenerateRequest(Strict):
        """Faces by seed: ``{"seed": 7, "n": 16}`` gives faces (7, 0) … (7, 15); ``{"seeds": [3, 9]}`` gives (3, 0) and (9, 0)."""

        seeds: list[Seed] | None = Field(None, min_length=1, max_length=limits.max_n,
                                         description="One face (s, 0) per seed, in order.")
        seed: Seed | None = Field(None, description="Faces (seed, start) … (seed, start + n − 1).")
        n: int = Field(1, ge=1, le=limits.max_n, description=f"With seed: how many faces (1 … {limits.max_n}).")
        start: int = Field(0, ge=0, le=SEED_MAX, description="With seed: the first face's index.")
        truncation: Truncation = None
        format: Literal["png", "webp", "jpeg"] = Field("png", description="PNG and WebP are lossless; JPEG quality 95.")
        as_: Literal["json", "grid", "zip"] = Field("json", alias="as", description=(
            "json: each face base64 with its (seed, index); grid: one image; zip: one file per face + manifest.json."))
        upscale: bool = Field(False, description="Enlarge the faces with the server's upscaler (400 when it has none).")
        filter: Literal["none", "face", "private"] = Field("none", description=(
            "face: only faces dlib's detector finds exactly one face in; private: also nobody from the training photos "
            "and no face twice (needs a server started with --privacy-check). Checked before any upscale. With seed, the "
            f"server walks on from start until n faces pass (at most {TRIES_PER_FACE}×n tried); rejected ones are listed "
            "with their reason (JSON: rejected; grid and zip: the X-Facegan-Rejected header)."))

        @model_validator(mode="after")
        def _one_way(self) -> "GenerateRequest":
            if (self.seeds is None) == (self.seed is None):
                raise ValueError("give either seeds (a list) or seed (with n), not both or neither")
            if self.seeds is not None and ("n" in self.model_fields_set or "start" in self.model_fields_set):
                raise ValueError("n and start go with seed, not with seeds")
            return self

        def faces(self) -> list[tuple[int, int]]:
            """The (seed, index) of each face asked for, in order."""
            if self.seeds is not None:
                return [(s, 0) for s in self.seeds]
            return [(self.seed, self.start + k) for k in range(self.n)]

    class Face(Strict):
        seed: Seed
        index: int = Field(0, ge=0, le=SEED_MAX)

    class InterpolateRequest(Strict):
        """A walk through faces: ``{"seeds": [3, 17, 42], "frames": 60}`` (faces (s, 0)) or
        ``{"faces": [{"seed": 3, "index": 5}, {"seed": 3, "index": 9}]}``."""

        seeds: list[Seed] | None = Field(None, min_length=2, max_length=32)
        faces: list[Face] | None = Field(None, min_length=2, max_length=32)
        frames: int = Field(30, ge=2, le=limits.max_frames, description=f"2 … {limits.max_frames}.")
        mode: Literal["slerp", "linear"] = Field("slerp", description="slerp follows the latent sphere (no washed-out middle).")
        loop: bool = Field(False, description="Return to the first face (a looping animation).")
        truncation: Truncation = None
        format: Literal["gif", "mp4", "png", "json"] = Field("gif", description=(
            "gif / mp4 (when the server has the video extra) animation; png: a strip, one row per segment; "
            "json: every frame as base64 PNG."))
        fps: float = Field(20.0, ge=1, le=60, description="Frames per second of a gif or mp4 (1 … 60), as the CLI's --fps.")

        @model_validator(mode="after")
        def _one_way(self) -> "InterpolateRequest":
            if (self.seeds is None) == (self.faces is None):
                raise ValueError("give either seeds or faces, not both or neither")
            return self

        def waypoints(self) -> list[tuple[int, int]]:
            return [(s, 0) for s in self.seeds] if self.seeds is not None else [(f.seed, f.index) for f in self.faces]

    return GenerateRequest, InterpolateRequest
