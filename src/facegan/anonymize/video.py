"""Videos: frames in and out through imageio-ffmpeg (its wheel ships ffmpeg), audio kept, and
one synthetic identity per tracked person.

Faces are linked from frame to frame by box overlap (IoU ≥ TRACK_IOU with a face of the last
TRACK_GAP frames): a track keeps its seed, and each frame's search starts from the latent that
fitted the frame before, with a quarter of the steps — so the painted person stays the same
person while pose and light follow the real one, and a video costs less per face than photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facegan.anonymize import detect
from facegan.anonymize.detect import Face
from facegan.anonymize.pipeline import Anonymizer, Record, face_seed
from facegan.errors import FaceganError
from facegan.fileio import atomic_path

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
TRACK_IOU = 0.3
TRACK_GAP = 5  # frames a track survives unseen (a blink of the detector)


@dataclass
class Track:
    id: int
    box: tuple[int, int, int, int]
    seen: int  # last frame index
    seed: int
    z: torch.Tensor | None = None  # the latent of its last replacement
    attempt: int = 0  # the attempt (replace.MIXES) that painted it: the same other person in every frame


class Tracker:
    """Greedy IoU matching of each frame's faces to the live tracks, best overlaps first."""

    def __init__(self, seed: int) -> None:
        self.seed, self.tracks, self.next_id = seed, [], 0

    def assign(self, faces: list[Face], frame: int) -> list[Track]:
        live = [t for t in self.tracks if frame - t.seen <= TRACK_GAP]
        pairs = sorted(((detect.iou(f.box, t.box), i, j) for i, f in enumerate(faces) for j, t in enumerate(live)), reverse=True)
        out: list[Track | None] = [None] * len(faces)
        used: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < TRACK_IOU:
                break
            if out[i] is None and j not in used:
                out[i], _ = live[j], used.add(j)
        for i, f in enumerate(faces):
            if out[i] is None:
                out[i] = Track(self.next_id, f.box, frame, face_seed(self.seed, self.next_id))
                self.tracks.append(out[i])
                self.next_id += 1
            out[i].box, out[i].seen = f.box, frame
        self.tracks = [t for t in self.tracks if frame - t.seen <= TRACK_GAP]
        return out  # type: ignore[return-value]


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def anonymize_video(anon: Anonymizer, src: Path, dst: Path, progress: bool = True) -> tuple[list[Record], int]:
    """Write the anonymized ``src`` to ``dst`` (H.264, the source's frame rate and size, its audio
    track re-encoded as AAC when it has one); returns (the records of all frames, frames written)."""
    ffmpeg = detect.require("imageio_ffmpeg")
    try:
        reader = ffmpeg.read_frames(str(src))
        meta = reader.__next__()
    except (OSError, RuntimeError, StopIteration) as e:
        raise FaceganError(f"{src}: not a readable video ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    w, h = meta["size"]
    fps = float(meta.get("fps") or 25.0)
    has_audio = bool(meta.get("audio_codec"))
    tracker = Tracker(anon.seed)
    records: list[Record] = []
    frames = 0
    total = int(round(float(meta.get("duration") or 0) * fps)) or None
    with atomic_path(dst) as tmp:
        writer = ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", macro_block_size=2,
                                     audio_path=str(src) if has_audio else None, audio_codec="aac" if has_audio else None,
                                     output_params=["-f", "mp4", "-preset", "veryfast", "-crf", "18"])
        writer.send(None)
        try:
            for k, raw in enumerate(tqdm(reader, total=total, unit="frame", disable=not progress, dynamic_ncols=True)):
                frame = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
                faces = anon.detect(frame)
                tracks = tracker.assign(faces, k)
                out, recs = anon.image(frame, faces=faces, warm={i: (t.z, t.seed, t.attempt) for i, t in enumerate(tracks)})
                for r, t in zip(recs, tracks):
                    r.frame, r.track = k, t.id
                    if r.z is not None:
                        t.z, t.attempt = r.z, r.attempt
                records.extend(recs)
                writer.send(np.ascontiguousarray(out))
                frames += 1
        finally:
            writer.close()
            reader.close()
    return records, frames
