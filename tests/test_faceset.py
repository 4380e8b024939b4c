"""facegan.faceset and facegan.identity: synthetic face sets that hold faces, none twice and nobody
from the training photos — built, checked by an independent pass, killed, resumed and extended.

The generator is replaced by a pool of known images (drawn faces, noise, copies of training faces,
copies of earlier candidates), so what each filter must do is known; the filters themselves
(dlib's detector and embedding) are the real ones. dlib's embedding sees every drawn face as much
the same person (0.25–0.5 apart, where real people are ≥ 0.6), so the builds here call two faces
the same person below P = 0.3: copies are at 0, distinct drawn faces above it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegan import faceset, identity
from facegan.cli import main
from facegan.data.procedural import render_faces
from facegan.errors import FaceganError
from facegan.faceset import Sieve
from facegan.identity import Looks, nearest
from facegan.metrics import fd_face
from facegan.models.dcgan import ModelConfig
from facegan.train.loop import train

dlib_needed = pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="the anonymize extra (dlib) is not installed")


# --- the sieve's logic, on made-up detections and descriptors ----------------------------------------

class FakeInspector:
    """Looks read off the image: pixel [0,0,0] = faces found, [0,0,1] = score + 100,
    pixels [1, 0:128, 0] / 100 = the descriptor."""

    def look(self, images: np.ndarray, min_score: float = 0.0, detect: bool = True) -> Looks:
        faces = images[:, 0, 0, 0].astype(np.int64)
        score = images[:, 0, 0, 1].astype(float) - 100
        emb = images[:, 1, :128, 0].astype(np.float32) / 100
        emb[faces != 1] = np.nan
        return Looks(faces, score, emb)


def fake(faces: int, emb: list[float]) -> np.ndarray:
    img = np.zeros((2, 128, 3), np.uint8)
    img[0, 0, 0], img[0, 0, 1] = faces, 101
    img[1, :128, 0] = np.resize(np.array(emb) * 100, 128)
    return img


def test_the_sieve_names_the_first_check_a_face_fails_and_remembers_what_it_kept():
    bank = FakeInspector().look(np.stack([fake(1, [0.0])])).embedding  # the training face: all zeros
    batch = np.stack([fake(0, [0.5]), fake(2, [0.5]), fake(1, [0.01]), fake(1, [0.5]), fake(1, [0.51]),
                      fake(1, [0.5]), fake(1, [0.05])])
    sieve = Sieve(FakeInspector(), bank, duplicate=0.2, privacy=0.6)  # 0.01·√128 = 0.11 from the training face
    got = sieve.sift(batch)
    assert [v.reason for v in got] == ["no_face", "several_faces", "training_identity", None, "duplicate",
                                       "duplicate", "training_identity"]
    assert got[3].kept_distance == np.inf and got[4].kept_distance == pytest.approx(0.01 * np.sqrt(128), abs=1e-4)
    assert got[3].train_distance == pytest.approx(0.5 * np.sqrt(128), abs=1e-4) and got[0].train_distance == np.inf
    assert got[0].score == 1.0 and len(sieve.kept) == 1
    # the next batch is compared with what this one kept; a limit stops at the face that fills the set
    more = sieve.sift(np.stack([fake(1, [0.5]), fake(1, [0.9]), fake(1, [1.5]), fake(1, [2.0])]), limit=2)
    assert [v.reason for v in more] == ["duplicate", None, None]
    assert len(sieve.kept) == 3
    assert [v.reason for v in Sieve(FakeInspector(), None).sift(batch[2:3])] == [None]  # no bank: no privacy check


def test_the_same_person_distance_of_a_training_set_and_the_line_that_names_it():
    bank = np.eye(128, dtype=np.float32) * 0.5  # every pair of different photos 0.5·√2 = 0.707 apart
    fit, share = identity.same_person_distance(bank)
    assert fit == pytest.approx(0.5 * np.sqrt(2)) and share == 0.0
    assert identity.same_person_distance(np.zeros((5, 128), np.float32)) == (0.0, 1.0)  # only duplicates
    state = faceset._State(job={}, n=10, tried=1000, rejected={"no_face": 10, "several_faces": 0, "training_identity": 990,
                                                                 "duplicate": 0})
    line = faceset._kept_nothing(state, Sieve(FakeInspector(), bank, privacy=0.8))
    assert "none of the first 1000 faces is 0.8 or farther from every training face" in line
    assert "0% of pairs of different photos are closer than dlib's 0.6" in line and "--privacy 0.71" in line
    assert "is this a face model" in faceset._kept_nothing(state, Sieve(FakeInspector(), None))
    state.kept = 3
    assert "after 3 kept" in faceset._kept_nothing(state, Sieve(FakeInspector(), bank))


def test_nearest_is_the_brute_force_answer():
    rng = np.random.default_rng(0)
    q, b = rng.normal(size=(300, 128)).astype(np.float32), rng.normal(size=(1000, 128)).astype(np.float32)
    d, i = nearest(q, b, cells=64 * 1000)  # chunks of 64 queries
    full = np.linalg.norm(q[:, None].astype(np.float64) - b[None].astype(np.float64), axis=2)
    assert np.array_equal(i, full.argmin(1)) and np.allclose(d, full.min(1), atol=1e-9)
    d0, i0 = nearest(q, np.zeros((0, 128), np.float32))
    assert np.all(d0 == np.inf) and np.all(i0 == -1)


# --- a real build, with a pool of known images as the generator --------------------------------------

TRAIN = render_faces(12, 64, seed=7)
FRESH = render_faces(80, 64, seed=11)  # the detector finds 39 of them, 10 of the first 20
NOISE = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
# candidates 0–1 noise, 2 a training face, 3–22 fresh, 23 training face again, 24 = candidate 3 again, 25–84 fresh
POOL = np.concatenate([NOISE[:2], TRAIN[4:5], FRESH[:20], TRAIN[5:6], FRESH[:1], FRESH[20:], NOISE[2:]])
P = 0.3  # the same-person distance for drawn faces


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A 64² run trained for two steps on the TRAIN faces (as PNG files): its generator is replaced
    by POOL in the tests, but its checkpoint, config and training data are real."""
    root = tmp_path_factory.mktemp("faceset")
    photos = root / "photos"
    photos.mkdir()
    for k, img in enumerate(TRAIN):
        Image.fromarray(img).save(photos / f"{k:03d}.png")
    from facegan.config import TrainConfig

    cfg = TrainConfig(preset="tiny", data=str(photos), out=str(root / "run"), batch=4, max_images=8, log_every=1,
                      sample_every=2, ckpt_every=2, grid=4, model=ModelConfig(res=64, z_dim=8, g_width=4, d_width=4, width_cap=16))
    return train(cfg, progress=False).run


@pytest.fixture
def pool(monkeypatch):
    """The generator replaced by POOL: candidate i is POOL[i] (noise past its end)."""
    calls = []

    def faces(G, n, seed=0, start=0, batch_size=256, truncation=None, upscaler=None):
        calls.append(start)
        out = [POOL[i] if i < len(POOL) else NOISE[i % 4] for i in range(start + 1000 * seed, start + 1000 * seed + n)]
        return np.stack(out)
    monkeypatch.setattr(faceset, "faces", faces)
    return calls


def read_meta(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


@dlib_needed
@pytest.mark.slow
def test_a_built_set_holds_single_faces_none_twice_and_nobody_from_training(model, pool, tmp_path):
    built = faceset.build(model, 20, tmp_path / "set", batch=8, workers=1, privacy=P, progress=False)
    assert built.kept == 20 and (built.out / "README.md").is_file()
    assert sum(built.rejected.values()) + built.kept == built.tried
    meta = read_meta(built.out)
    assert [m["file_name"] for m in meta] == [f"seed0-{m['index']:06d}.png" for m in meta]
    assert sorted(p.name for p in built.out.glob("*.png")) == sorted(m["file_name"] for m in meta)
    kept = {m["index"] for m in meta}
    assert not kept & {0, 1, 2, 23, 24}  # noise, the training faces, the repeat of candidate 3 …
    assert 3 in kept and built.rejected["training_identity"] >= 2 and built.rejected["duplicate"] >= 1
    assert built.rejected["no_face"] >= 2
    assert set(meta[0]) == {"file_name", "seed", "index", "truncation", "detector_score", "nearest_training_distance",
                            "nearest_kept_distance"}
    # an independent brute-force pass: every kept face, re-read from disk, vs every training face and every other kept face
    imgs = np.stack([np.asarray(Image.open(built.out / m["file_name"])) for m in meta])
    assert np.array_equal(imgs, POOL[[m["index"] for m in meta]])
    emb, train_emb = fd_face.embed(imgs), fd_face.embed(TRAIN)
    to_train = np.linalg.norm(emb[:, None] - train_emb[None], axis=2).min(1)
    assert np.all(to_train >= P)
    assert np.allclose(to_train, [m["nearest_training_distance"] for m in meta], atol=1e-3)
    between = np.linalg.norm(emb[:, None] - emb[None], axis=2) + np.eye(len(emb)) * 9
    assert between.min() >= identity.DUPLICATE
    assert all(m["detector_score"] >= 0 for m in meta) and meta[0]["nearest_kept_distance"] is None
    sheet = (built.out / "README.md").read_text()
    assert "20 synthetic faces of nobody in the training photos" in sheet
    assert f"| ≥ {P} | {built.rejected['training_identity']} |" in sheet
    assert f"Kept 20 of {built.tried} faces tried" in sheet and "Licence" in sheet
    # the same command again does nothing; two workers build the very same set
    assert faceset.build(model, 20, tmp_path / "set", batch=8, workers=1, privacy=P, progress=False).tried == built.tried
    other = faceset.build(model, 20, tmp_path / "set2", batch=5, workers=2, privacy=P, progress=False)
    assert (other.out / "metadata.jsonl").read_bytes() == (built.out / "metadata.jsonl").read_bytes()


@dlib_needed
@pytest.mark.slow
def test_a_killed_build_resumes_and_a_larger_n_extends_it_to_what_one_run_makes(model, pool, tmp_path, monkeypatch):
    whole = faceset.build(model, 14, tmp_path / "whole", batch=6, workers=1, privacy=P, progress=False)
    save = faceset._save_state
    count = {"n": 0}

    def dies_on_the_fourth(out, state):  # after batch 3's faces and lines are written, before its state is
        count["n"] += 1
        if count["n"] == 4:
            raise KeyboardInterrupt
        save(out, state)
    monkeypatch.setattr(faceset, "_save_state", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        faceset.build(model, 10, tmp_path / "set", batch=6, workers=1, privacy=P, progress=False)
    monkeypatch.setattr(faceset, "_save_state", save)
    assert not (tmp_path / "set" / "README.md").exists()  # nothing passed off as done
    state = json.loads((tmp_path / "set" / ".facegan" / "state.json").read_text())
    assert state["tried"] == 12 and not state["complete"]
    assert len(list((tmp_path / "set").glob("*.png"))) > state["kept"]  # batch 3's faces are there, uncounted
    (tmp_path / "set" / "preview.png").write_bytes(b"the user's own file")
    with pytest.raises(FaceganError, match=f"already holds {state['kept']} faces, more than --n 1"):
        faceset.build(model, 1, tmp_path / "set", batch=6, workers=1, privacy=P, progress=False)
    import fcntl
    with open(tmp_path / "set" / ".facegan" / "lock") as held:  # another run is writing to the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(FaceganError, match="another facegan dataset run is writing to"):
            faceset.build(model, 10, tmp_path / "set", batch=6, workers=1, privacy=P, progress=False)
    resumed = faceset.build(model, 10, tmp_path / "set", batch=6, workers=1, privacy=P, progress=False)
    assert (tmp_path / "set" / "preview.png").read_bytes() == b"the user's own file"  # only face files are ever removed
    (tmp_path / "set" / "preview.png").unlink()
    assert resumed.kept == 10 and (tmp_path / "set" / "README.md").exists()
    (tmp_path / "set" / "README.md").unlink()  # a datasheet lost: the same command writes it again
    assert faceset.build(model, 10, tmp_path / "set", batch=6, workers=1, privacy=P, progress=False).kept == 10
    assert (tmp_path / "set" / "README.md").is_file()
    extended = faceset.build(model, 14, tmp_path / "set", batch=6, workers=1, privacy=P, progress=False)
    assert (extended.kept, extended.tried, extended.rejected) == (whole.kept, whole.tried, whole.rejected)
    assert (tmp_path / "set" / "metadata.jsonl").read_bytes() == (whole.out / "metadata.jsonl").read_bytes()
    assert sorted(p.name for p in (tmp_path / "set").glob("*.png")) == sorted(p.name for p in whole.out.glob("*.png"))


@dlib_needed
@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2_with_nothing_half_written(model, pool, tmp_path, capsys, monkeypatch):
    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["facegan", "dataset", str(model), *args])
        with pytest.raises(SystemExit) as e:
            main()
        return e.value.code, capsys.readouterr().err

    code, err = run("--n", "3", "--out", str(tmp_path / "a"), "--privacy", "3")
    assert code == 2 and "--privacy must be a finite number > 0 and ≤ 2" in err and not (tmp_path / "a").exists()
    code, err = run("--out", str(tmp_path / "a"))
    assert code == 2 and "either --n N" in err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    code, err = run("--n", "3", "--out", str(taken))
    assert code == 2 and "not empty and holds no facegan dataset" in err and (taken / "notes.txt").read_text() == "mine"
    code, err = run("--n", "3", "--out", str(tmp_path / "a"), "--train-data", str(tmp_path / "missing"))
    assert code == 2 and "the training data for the privacy check" in err and not (tmp_path / "a").exists()
    assert faceset.build(model, 2, tmp_path / "b", workers=1, privacy=P, progress=False).kept == 2
    code, err = run("--n", "3", "--out", str(tmp_path / "b"), "--seed", "1")
    assert code == 2 and "holds another dataset (seed 0 (asked: 1), privacy 0.3 (asked: 0.6))" in err
    assert len(read_meta(tmp_path / "b")) == 2
    # a model that makes no faces: stopped with one line; the folder, holding nothing, takes another set
    monkeypatch.setattr(faceset, "GIVE_UP_TRIES", 16)
    with pytest.raises(FaceganError, match="none of the first 16 faces passed the filters .*is this a face model"):
        faceset.build(model, 2, tmp_path / "c", seed=3, batch=8, workers=1, privacy=P, progress=False)  # seed 3: noise
    assert faceset.build(model, 2, tmp_path / "c", workers=1, privacy=P, progress=False).kept == 2


@dlib_needed
@pytest.mark.slow
def test_a_model_whose_training_photos_are_gone_needs_them_or_an_explicit_no(model, pool, tmp_path, capsys, monkeypatch):
    photos = Path(json.loads((model / "config.json").read_text())["data"])
    hidden = photos.with_name("elsewhere")
    photos.rename(hidden)
    try:
        with pytest.raises(FaceganError, match="is not here, so the privacy check cannot run: pass --train-data PATH.*--no-privacy-check"):
            faceset.build(model, 2, tmp_path / "a", workers=1, privacy=P, progress=False)
        assert not (tmp_path / "a").exists()
        assert faceset.build(model, 2, tmp_path / "b", train_data=hidden, workers=1, privacy=P, progress=False).kept == 2
        unchecked = faceset.build(model, 2, tmp_path / "c", privacy_check=False, workers=1, privacy=P, progress=False)
        sheet = (unchecked.out / "README.md").read_text()
        assert "NOT checked against the training photos" in sheet and "--no-privacy-check" in sheet
        assert read_meta(unchecked.out)[0]["nearest_training_distance"] is None
        assert read_meta(unchecked.out)[0]["index"] == 2  # the training face is kept when nobody checks
    finally:
        hidden.rename(photos)


def test_without_dlib_the_filters_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(FaceganError, match=r"needs dlib, part of the anonymize extra: pip install 'facegan\[anonymize\]'"):
        identity.Inspector(1)


# --- face-recognition test packs -------------------------------------------------------------------

@pytest.fixture
def moves(monkeypatch, pool):
    """A person's second photo is its first shifted by one pixel (the same person), except that the
    first move of candidates 3 and 4 gives noise (so a second move is needed)."""
    import torch

    from facegan import testpack

    monkeypatch.setattr(testpack, "faces", faceset.faces)
    monkeypatch.setattr(testpack, "moved", lambda z, sigma, seed, index, attempt, truncation:
                        torch.tensor([index, attempt] + [0] * (len(z) - 2), dtype=torch.float32))

    def render(G, z, batch_size=256):
        out = []
        for row in z:
            index, attempt = int(row[0]), int(row[1])
            out.append(NOISE[0] if index in (3, 4) and attempt == 0 else np.roll(POOL[index], 1, axis=1))
        return np.stack(out)
    monkeypatch.setattr(testpack, "render", render)


@dlib_needed
@pytest.mark.slow
def test_a_test_pack_is_lfw_shaped_and_the_embedding_confirms_every_pair(model, moves, tmp_path):
    from facegan.testpack import build_pack

    pack = build_pack(model, 6, tmp_path / "pack", batch=8, workers=1, privacy=P, progress=False)
    out = pack.out
    lines = (out / "pairs.txt").read_text().splitlines()
    assert lines[0] == "1\t6" and len(lines) == 13
    same = [ln.split("\t") for ln in lines[1:7]]
    diff = [ln.split("\t") for ln in lines[7:]]
    assert all(len(s) == 3 and s[1:] == ["1", "2"] for s in same) and all(len(d) == 4 and d[0] != d[2] for d in diff)
    for name, *_ in same:
        assert (out / name / f"{name}_0001.png").is_file() and (out / name / f"{name}_0002.png").is_file()
    assert same[0][0] == "seed0-000003"  # the first face kept, which needed a second move
    meta = {m["file_name"]: m for m in read_meta(out)}
    assert meta["seed0-000003/seed0-000003_0002.png"]["move"]["attempt"] == 1
    # an independent pass over the files: the embedding calls every same pair one person and every different pair two
    def dist(a: str, b: str) -> float:
        e = fd_face.embed(np.stack([np.asarray(Image.open(out / a)), np.asarray(Image.open(out / b))]))
        return float(np.linalg.norm(e[0] - e[1]))
    assert all(dist(f"{n}/{n}_0001.png", f"{n}/{n}_0002.png") < P for n, *_ in same)
    assert all(dist(f"{a}/{a}_0001.png", f"{b}/{b}_0002.png") >= P for a, _, b, _ in diff)
    assert pack.same.max() < P <= pack.different.min()
    records = [json.loads(r) for r in (out / "pairs.jsonl").read_text().splitlines()]
    assert [r["same"] for r in records] == [True] * 6 + [False] * 6
    assert "6 people who do not exist" in (out / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the build folder is gone
    with pytest.raises(FaceganError, match="not empty"):
        build_pack(model, 6, out, workers=1, privacy=P, progress=False)
    two = build_pack(model, 2, tmp_path / "two", batch=8, workers=1, privacy=P, progress=False)  # the smallest pack
    lines = (two.out / "pairs.txt").read_text().splitlines()
    a, b = (line.split("\t")[0] for line in lines[1:3])
    assert lines[3:] == [f"{a}\t1\t{b}\t2", f"{b}\t1\t{a}\t2"]  # each person's first photo with the other's second
    with pytest.raises(FaceganError, match="--pairs must be an integer in 2"):
        build_pack(model, 1, tmp_path / "one", workers=1, privacy=P, progress=False)

