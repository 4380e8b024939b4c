"""Synthetic face sets people can use safely: `facegan dataset MODEL --n N --out DIR`.

A generator hands out faces; a user who wants synthetic data for augmentation or privacy needs to
know that each one is a face, that no face is there twice, and that none is a person from the
training photos — a GAN that memorised a face and hands it out as "synthetic" leaks exactly what
synthetic data is bought to protect. So faces (seed, 0), (seed, 1), … are generated in order and
each is *kept* only if, in this order (the first failed check names the rejection):

1. ``no_face`` / ``several_faces``: dlib's detector finds exactly one face with score ≥ ``min_score``;
2. ``training_identity``: its identity distance to every training face is ≥ ``privacy``
   (dlib's same-person 0.6 by default; the nearest-neighbour search and the cached training
   descriptors are facegan.identity's);
3. ``duplicate``: its identity distance to every face already kept is ≥ ``duplicate``.

The output is what the ecosystem reads: the kept PNGs and ``metadata.jsonl`` in one folder
(Hugging Face ``datasets``' imagefolder loads it as is), and a datasheet ``README.md`` written
when the set is complete. Work state lives in the hidden ``.facegan/`` folder, which imagefolder
skips: after each batch the images are on disk before the metadata lines and descriptors that
name them, and those before the state that counts them, so a run killed at any instant resumes
from its last batch with nothing kept twice (the same command again). Every decision depends on
the model, the seed and the thresholds alone — not on the batch size or the number of workers —
so a set is the same on every machine, and a larger ``--n`` later extends it with exactly the
faces a larger first run would have kept.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from facegan import checks, saved, viz
from facegan.data.prepare import is_built_in, open_prepared, resolve_dataset
from facegan.errors import FaceganError
from facegan.fileio import flush_to_disk, read_json, sweep_stale, write_bytes_atomic, write_text_atomic
from facegan.identity import DETECT_SIDE, DISTANCE_MAX, DUPLICATE, FALSE_MATCH, MIN_SCORE, SAME_PERSON, Inspector, check_privacy, nearest, same_person_distance, training_bank
from facegan.models.dcgan import Generator
from facegan.models.srresnet import SRGenerator
from facegan.sample import face_file, faces

FORMAT = "facegan-faceset-1"
STATE_DIR = ".facegan"  # hidden: Hugging Face's imagefolder and most viewers skip it
STATE, KEPT = "state.json", "kept.f32"
METADATA, DATASHEET = "metadata.jsonl", "README.md"
REASONS = ("no_face", "several_faces", "training_identity", "duplicate")
FACE_FILE = re.compile(r"seed\d+-\d{6,}\.png")  # sample.face_file's names: the only files a resume deletes
GIVE_UP_TRIES = 1000  # faces rejected in a row: the model makes no (more) faces these filters accept


def check_options(n: int, seed: int = 0, truncation: float | None = None, min_score: float = MIN_SCORE,
                  duplicate: float = DUPLICATE, privacy: float = SAME_PERSON, batch: int = 64,
                  workers: int | None = None) -> None:
    """`facegan dataset`'s options, checked before any slow work."""
    checks.integer("--n", n, 1, 10_000_000)
    checks.seed("--seed", seed)
    checks.truncation("--truncation", truncation)
    checks.number("--min-score", min_score, -1.0, 5.0)
    checks.number("--duplicate", duplicate, 0.0, DISTANCE_MAX)
    check_privacy(privacy)
    checks.integer("--batch", batch, 1, 4096)
    if workers is not None:
        checks.integer("--workers", workers, 1, 256)


@dataclass
class Verdict:
    """One candidate face: why it was rejected (None: kept), the detector's best score, and the
    identity distances to the nearest training face and to the nearest face kept before it
    (inf when there is none to compare with, or the check did not get that far)."""

    reason: str | None
    score: float
    train_distance: float
    kept_distance: float
    embedding: np.ndarray


class Sieve:
    """The three checks over batches of faces, with the kept faces' descriptors it grows as it keeps.

    ``bank`` is the training set's descriptors, None when the privacy check is off. Used by
    :func:`build` and by the face-recognition test packs (facegan.testpack).
    """

    def __init__(self, inspector: Inspector, bank: np.ndarray | None, min_score: float = MIN_SCORE,
                 duplicate: float = DUPLICATE, privacy: float = SAME_PERSON,
                 kept: np.ndarray | None = None) -> None:
        self.inspector, self.bank = inspector, bank
        self.min_score, self.duplicate, self.privacy = min_score, duplicate, privacy
        start = kept if kept is not None else np.zeros((0, 128), np.float32)
        self._buffer = np.zeros((max(1024, 2 * len(start)), 128), np.float32)  # grown by doubling: no copy per batch
        self._buffer[:len(start)] = start
        self._n = len(start)

    @property
    def kept(self) -> np.ndarray:
        """The descriptors of the faces kept so far, in order."""
        return self._buffer[:self._n]

    def _keep(self, emb: np.ndarray) -> None:
        if self._n == len(self._buffer):
            self._buffer = np.concatenate([self._buffer, np.zeros_like(self._buffer)])
        self._buffer[self._n] = emb
        self._n += 1

    def sift(self, images: np.ndarray, limit: int | None = None) -> list[Verdict]:
        """Verdicts on ``images`` in order; stops after ``limit`` kept. Faces kept are added to
        ``self.kept`` (a later face of the same batch is compared with an earlier kept one too)."""
        looks = self.inspector.look(images, self.min_score)
        single = np.flatnonzero(looks.faces == 1)
        d_train = np.full(len(images), np.inf)
        if self.bank is not None:
            d_train[single] = nearest(looks.embedding[single], self.bank)[0]
        d_old = np.full(len(images), np.inf)
        d_old[single] = nearest(looks.embedding[single], self.kept)[0]
        new: list[np.ndarray] = []
        out: list[Verdict] = []
        for j in range(len(images)):
            emb = looks.embedding[j]
            d_kept = math.inf
            if looks.faces[j] == 0:
                reason = "no_face"
            elif looks.faces[j] > 1:
                reason = "several_faces"
            else:
                d_new = min((float(np.linalg.norm(emb.astype(np.float64) - e)) for e in new), default=math.inf)
                d_kept = min(float(d_old[j]), d_new)
                if d_train[j] < self.privacy:
                    reason = "training_identity"
                elif d_kept < self.duplicate:
                    reason = "duplicate"
                else:
                    reason = None
                    new.append(emb)
            out.append(Verdict(reason, float(looks.score[j]), float(d_train[j]), d_kept, emb))
            if limit is not None and len(new) == limit:
                break
        for emb in new:
            self._keep(emb)
        return out


@dataclass
class Built:
    """What :func:`build` left in ``out``, complete with its datasheet: ``kept`` faces of the ``tried``
    candidates, and the rejections by reason."""

    out: Path
    kept: int
    tried: int
    rejected: dict[str, int]
    seconds: float


@dataclass
class _State:
    job: dict[str, Any]
    n: int
    kept: int = 0
    tried: int = 0  # candidates (seed, 0) … (seed, tried − 1) are decided
    last_kept: int = 0  # 1 + the index of the last face kept (0: none yet)
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    metadata_bytes: int = 0
    seconds: float = 0.0
    complete: bool = False


def build(source: str | Path, n: int, out: str | Path, seed: int = 0, truncation: float | None = None,
          upscale: str | Path | None = None, min_score: float = MIN_SCORE, duplicate: float = DUPLICATE,
          privacy: float = SAME_PERSON, privacy_check: bool = True, train_data: str | Path | None = None,
          batch: int = 64, workers: int | None = None, progress: bool = True) -> Built:
    """Generate faces of ``source`` (a run, checkpoint or model folder) until ``n`` are kept in ``out``.

    ``train_data`` names the training set for the privacy check when the model's own record of it
    cannot be found here; ``privacy_check=False`` builds without that check (the datasheet says so
    in its first lines). An ``out`` that holds this same set (same model, seed and filters)
    resumes or extends it; one that holds anything else is refused before the slow work, and one
    that another run is writing to is refused at once.
    """
    check_options(n, seed, truncation, min_score, duplicate, privacy, batch, workers)
    truncation = None if truncation is not None and math.isinf(truncation) else truncation  # ψ = inf is off
    out = _check_out(out)
    model, G, sr = open_generator(source, upscale)
    with Inspector(workers, "the dataset's filters") as inspector:  # no extra: one line, before anything is written
        prepared = training_data(model, train_data, G, progress=progress) if privacy_check else None
        job = {"format": FORMAT, "model": saved.weights_sha256(G), "upscale": saved.weights_sha256(sr) if sr else None,
               "seed": seed, "truncation": truncation, "min_score": min_score, "duplicate": duplicate,
               "privacy": privacy if privacy_check else None,
               "training_data": open_prepared(prepared).manifest.get("fingerprint") if prepared else None}
        with _locked(out):
            state = _open_state(out, job, n)
            if state.complete and (out / DATASHEET).is_file():
                return Built(out, state.kept, state.tried, state.rejected, state.seconds)
            bank = training_bank(prepared, inspector, progress=progress) if prepared else None
            sieve = Sieve(inspector, bank, min_score, duplicate, privacy, kept=_read_kept(out, state.kept))
            state = _fill(G, sr, sieve, out, state, seed, truncation, batch, progress)
            _write_datasheet(out, model, G, source, upscale, prepared, bank, state)
            state.complete = True
            _save_state(out, state)
    return Built(out, state.kept, state.tried, state.rejected, state.seconds)


def _check_out(out: str | Path) -> Path:
    """``--out`` as a path, refused at once when it is a non-empty folder that holds no facegan set."""
    path = checks.output_dir("--out", out).absolute()
    if path.is_dir() and not (path / STATE_DIR / STATE).is_file() and any(not e.name.startswith(".") for e in os.scandir(path)):
        raise FaceganError(f"--out {path} is not empty and holds no facegan dataset: choose a new or empty folder")
    return path


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the whole build: a second run on the same folder is refused, not interleaved."""
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    with open(out / STATE_DIR / "lock", "a") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here
            yield
            return
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FaceganError(f"another facegan dataset run is writing to {out}: wait for it, or choose another --out") from None
        yield


def open_generator(source: str | Path, upscale: str | Path | None) -> tuple[saved.Saved, Generator, SRGenerator | None]:
    """The saved face model, its generator (the EMA one where kept) and the ``--upscale`` upscaler, on the CPU."""
    model = saved.open(source)
    if model.kind != saved.GAN:
        raise FaceganError(f"{source} is an upscaler; this needs a face generator (pass the upscaler as --upscale)")
    return model, model.generator("cpu"), saved.load_upscaler(upscale) if upscale is not None else None


def _fill(G: Generator, sr: SRGenerator | None, sieve: Sieve, out: Path, state: _State, seed: int,
          truncation: float | None, batch: int, progress: bool) -> _State:
    """The generate-and-sift loop, one durable batch at a time."""
    started = time.perf_counter() - state.seconds
    with tqdm(total=state.n, initial=state.kept, unit="face", desc="kept", disable=not progress, dynamic_ncols=True) as bar:
        while state.kept < state.n:
            # 1. the next batch of candidates, in index order; GIVE_UP_TRIES in a row rejected stop the
            #    run at that very index, whatever the batch size
            left = GIVE_UP_TRIES - (state.tried - state.last_kept)
            if left <= 0:
                raise FaceganError(_kept_nothing(state, sieve))
            m = min(batch, left)
            imgs = faces(G, m, seed=seed, start=state.tried, batch_size=m, truncation=truncation, upscaler=sr)
            # 2. the checks (up to the face that completes the set: later ones stay undecided)
            verdicts = sieve.sift(imgs, limit=state.n - state.kept)
            # 3. the kept faces on disk first, then the lines naming them, then the state counting them
            rows, kept_emb, files = [], [], []
            for j, v in enumerate(verdicts):
                index = state.tried + j
                if v.reason is not None:
                    state.rejected[v.reason] += 1
                    continue
                name = face_file(seed, index)
                files.append(write_bytes_atomic(out / name, viz.encode_png(imgs[j]), durable=False))
                rows.append({"file_name": name, "seed": seed, "index": index, "truncation": truncation,
                             "detector_score": round(v.score, 4), "nearest_training_distance": _finite(v.train_distance),
                             "nearest_kept_distance": _finite(v.kept_distance)})
                kept_emb.append(v.embedding)
                state.last_kept = index + 1
            if files:
                flush_to_disk(files)
            state.metadata_bytes += _append(out / METADATA, "".join(json.dumps(r) + "\n" for r in rows).encode(),
                                            state.metadata_bytes)
            if kept_emb:
                _append(out / STATE_DIR / KEPT, np.stack(kept_emb).astype(np.float32).tobytes(), state.kept * 128 * 4)
            state.tried += len(verdicts)
            state.kept += len(rows)
            state.seconds = time.perf_counter() - started
            _save_state(out, state)
            bar.update(len(rows))
            bar.set_postfix_str(f"tried {state.tried}; rejected: {reasons(state.rejected)}", refresh=False)
    return state


def _kept_nothing(state: _State, sieve: Sieve) -> str:
    """Why GIVE_UP_TRIES faces in a row were rejected: the model makes no (new) faces, or the
    same-person distance does not fit this data."""
    r = state.rejected
    if state.kept:
        return (f"the last {GIVE_UP_TRIES} faces tried were all rejected, after {state.kept} kept (so far: {reasons(r)}): "
                f"the model makes no more faces these filters accept; {state.kept} are kept in --out, ask for at most that many")
    if sieve.bank is None or r["training_identity"] < r["no_face"] + r["several_faces"]:
        return f"none of the first {state.tried} faces passed the filters ({reasons(r)}): is this a face model?"
    fit, share = same_person_distance(sieve.bank)
    return (f"none of the first {state.tried} faces is {sieve.privacy} or farther from every training face ({reasons(r)}); "
            f"on this training set {share:.0%} of pairs of different photos are closer than dlib's {SAME_PERSON} too, so "
            f"nearly everybody resembles somebody; {fit:.2f} is the distance only {FALSE_MATCH:.0%} of them fall below: "
            f"--privacy {math.ceil(fit * 100) / 100:.2f} (see README 'Synthetic face sets')")


def reasons(rejected: dict[str, int]) -> str:
    """Rejection counts as one phrase: "no face 3, several faces 0, …"."""
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in rejected.items())


def _finite(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None


def _append(path: Path, data: bytes, at: int) -> int:
    """Write ``data`` at byte ``at`` of ``path`` (cutting off whatever a killed run left after it), durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(at)
        f.seek(at)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return len(data)


# --- the job's identity, its state and resuming ---------------------------------------------------

NO_CHECK = "--no-privacy-check to build without it (the datasheet will say so)"


def training_data(model: saved.Saved, train_data: str | Path | None, G: Generator, progress: bool = True,
                  without: str = NO_CHECK) -> Path:
    """The prepared training set at G's resolution, for the privacy check; one line when it cannot be
    found, ending with ``without``: how to go on without the check."""
    where = train_data if train_data is not None else model.data
    if train_data is None and not is_built_in(where) and not Path(where).expanduser().exists():
        raise FaceganError(f"the training data the model names, {where}, is not here, so the privacy check cannot run: "
                           f"pass --train-data PATH (the same photos), or {without}")
    try:
        return resolve_dataset(where, G.cfg.res, G.cfg.channels, progress=progress)
    except FaceganError as e:
        raise FaceganError(f"the training data for the privacy check: {e}") from None


def _open_state(out: Path, job: dict[str, Any], n: int) -> _State:
    """This job's state in ``out``: fresh for a new or empty folder, the saved one to resume or
    extend; refused when ``out`` holds another dataset or fewer faces are asked for than it holds."""
    path = out / STATE_DIR / STATE
    if not path.is_file():  # _check_out refused a folder with anything else in it
        state = _State(job, n)
        _save_state(out, state)
        return state
    try:
        state = _State(**read_json(path))  # type: ignore[arg-type]
    except (TypeError, ValueError, OSError) as e:
        raise FaceganError(f"{path} is unreadable ({e}); build the set in a new folder") from None
    if state.job != job and state.kept == 0:  # a set that kept nothing is no dataset: start this one instead
        (out / METADATA).unlink(missing_ok=True)
        (out / STATE_DIR / KEPT).unlink(missing_ok=True)
        state = _State(job, n)
        _drop_orphans(out, state)
        _save_state(out, state)
        return state
    if state.job != job:
        diff = ", ".join(f"{k} {state.job.get(k)!r} (asked: {job.get(k)!r})" for k in job if state.job.get(k) != job.get(k))
        raise FaceganError(f"--out {out} holds another dataset ({diff}): choose another folder, or the same options to continue it")
    if n < state.kept:
        raise FaceganError(f"--out {out} already holds {state.kept} faces, more than --n {n}: ask for at least {state.kept}")
    sweep_stale(out)
    _drop_orphans(out, state)
    if n != state.n:
        state.n = n
        state.complete = state.complete and n == state.kept
        _save_state(out, state)
    if not state.complete:  # only after the state says so: a datasheet only ever describes a complete set
        (out / DATASHEET).unlink(missing_ok=True)
    return state


def _save_state(out: Path, state: _State) -> None:
    write_text_atomic(out / STATE_DIR / STATE, json.dumps(asdict(state), indent=1))


def _drop_orphans(out: Path, state: _State) -> None:
    """Cut the metadata back to what the state counts, and delete the face files no line names (a
    batch written after the last state: they come back, identical, when their batch is redone).
    Only files named as faces (``seedS-IIIIII.png``) are ever deleted."""
    meta = out / METADATA
    data = meta.read_bytes() if meta.exists() else b""
    try:
        named = {json.loads(line)["file_name"] for line in data[:state.metadata_bytes].decode().splitlines()}
    except (ValueError, KeyError, TypeError):
        named = None
    if len(data) < state.metadata_bytes or named is None or len(named) != state.kept:
        raise FaceganError(f"{meta} no longer matches the {state.kept} faces its state counts (edited?); "
                           "build the set in a new folder")
    if len(data) > state.metadata_bytes:
        with open(meta, "r+b") as f:
            f.truncate(state.metadata_bytes)
    for e in os.scandir(out):
        if e.is_file() and FACE_FILE.fullmatch(e.name) and e.name not in named:
            os.unlink(e.path)


def _read_kept(out: Path, kept: int) -> np.ndarray:
    path = out / STATE_DIR / KEPT
    if kept == 0:
        return np.zeros((0, 128), np.float32)
    data = np.fromfile(path, np.float32, count=kept * 128) if path.exists() else np.zeros(0, np.float32)
    if data.size != kept * 128:
        raise FaceganError(f"{path} holds fewer descriptors than the {kept} faces kept; build the set in a new folder")
    return data.reshape(kept, 128)


# --- the datasheet -------------------------------------------------------------------------------

def _write_datasheet(out: Path, model: saved.Saved, G: Generator, source: str | Path, upscale: str | Path | None,
                     prepared: Path | None, bank: np.ndarray | None, state: _State) -> None:
    """README.md: what a user of the set needs to know to use it, and Hugging Face's card header."""
    job = state.job
    info = model.info if model.is_model_folder else {**model.info["config"], **model.info}
    lines = ["---", "license: other", "tags: [synthetic, faces, facegan]", "---", "",
             f"# {state.kept} synthetic faces of nobody in the training photos" if job["privacy"] is not None
             else f"# {state.kept} synthetic faces — NOT checked against the training photos", ""]
    if job["privacy"] is None:
        lines += ["**The privacy check was switched off (`--no-privacy-check`).** Faces in this set may be people "
                  "from the model's training photos: a GAN can hand back a face it memorised. Do not use it where "
                  "that matters.", ""]
    lines += ["Made by `facegan dataset`. Every face was generated, then kept only if it passed every filter below, "
              "in that order; each row counts the faces the filter rejected.", "",
              "| filter | threshold | rejected |", "|---|---|---|",
              f"| one face: dlib's HOG detector finds exactly one (on the face resized to {DETECT_SIDE}²) | "
              f"score ≥ {job['min_score']} | {state.rejected['no_face']} none, {state.rejected['several_faces']} several |"]
    lines += [f"| nobody from the training photos: identity distance (dlib's 128-d face embedding) to every training face | "
              f"≥ {job['privacy']} | {state.rejected['training_identity']} |" if job["privacy"] is not None else
              "| nobody from the training photos | **off** | — |"]
    lines += [f"| not the same face twice: identity distance to every face kept before it | ≥ {job['duplicate']} | "
              f"{state.rejected['duplicate']} |", "",
              f"Kept {state.kept} of {state.tried} faces tried ({state.kept / max(state.tried, 1):.1%}), faces (seed, index) "
              f"for seed {job['seed']}, index 0 to {state.tried - 1}, in {state.seconds:.0f} s.", "",
              "## Model", "",
              f"- `{source}` ({'model folder' if model.is_model_folder else 'checkpoint ' + model.checkpoint.name}), "
              f"preset {info.get('preset')}, {G.cfg.res}² faces, trained on {info.get('images')} images "
              f"(step {info.get('step')}); weights SHA-256 `{job['model'][:16]}…`",
              f"- truncation: {job['truncation'] if job['truncation'] is not None else 'off'}; "
              f"upscaled by `{upscale}` (the upscaled face is what was checked and kept)" if upscale is not None else
              f"- truncation: {job['truncation'] if job['truncation'] is not None else 'off'}; not upscaled", "",
              "## Training data", ""]
    if prepared is not None:
        manifest = open_prepared(prepared).manifest
        lines += [f"- {manifest.get('count')} faces from `{manifest.get('source') or model.data}` "
                  f"(content fingerprint `{manifest.get('fingerprint')}`), every one of them compared with every kept face."]
        if bank is not None:
            fit, share = same_person_distance(bank)
            lines += [f"- How the embedding sees these photos: {share:.1%} of random pairs of different training photos are "
                      f"closer than dlib's same-person {SAME_PERSON}; {FALSE_MATCH:.0%} are closer than {fit:.3f}."]
    else:
        lines += [f"- `{model.data}` (the model's record; not compared with the kept faces)."]
    lines += ["- **Licence**: these images are made by a model trained on those photos; whatever licence and consent "
              "terms bind the photos may bind the model and its outputs (many face sets, CelebA and All-Age-Faces among "
              "them, are for non-commercial research only). Check them before using this set.", "",
              "## Files", "",
              f"- `seedS-IIIIII.png`: the faces; `{METADATA}`: one line per face with `file_name`, `seed`, `index`, "
              "`truncation`, `detector_score`, `nearest_training_distance` and `nearest_kept_distance` (to the faces kept "
              "before it). `facegan generate MODEL --seed S --start I -n 1` makes any face again.",
              "- Load it with `datasets.load_dataset(\"imagefolder\", data_dir=\"THIS_FOLDER\")`.",
              f"- `{STATE_DIR}/`: facegan's work state (a larger `--n` extends the set); not part of the data.", ""]
    write_text_atomic(out / DATASHEET, "\n".join(lines))
