"""facegan anonymize: detection → alignment → replacement → blend on scenes the tests paint
themselves (procedural faces on a colour field), the fail-closed rules, the audit, seeds, video,
and bad input. Needs the anonymize extra (part of the test extra)."""

from __future__ import annotations

import json
import sys
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegan.data.procedural import render_faces
from facegan.errors import FaceganError

from test_cli import _one_error_line, facegan_in_process

cv2 = pytest.importorskip("cv2", reason="the anonymize extra is not installed (pip install 'facegan[anonymize]')")
pytest.importorskip("dlib", reason="the anonymize extra is not installed (pip install 'facegan[anonymize]')")

from facegan.anonymize import align, detect, obscure  # noqa: E402
from facegan.anonymize.batch import anonymize_path, build  # noqa: E402
from facegan.anonymize.detect import Face  # noqa: E402
from facegan.anonymize.pipeline import Anonymizer  # noqa: E402
from facegan.anonymize.video import Tracker, anonymize_video  # noqa: E402

W, H = 320, 240
FACE_PX = 112  # the pasted procedural faces' side: big enough for HOG without upsampling
BOXES = [(16, 40, 16 + FACE_PX, 40 + FACE_PX), (180, 70, 180 + FACE_PX, 70 + FACE_PX)]
TINY_BOX = (150, 8, 174, 32)


def scene(faces: np.ndarray, boxes=BOXES, shift: int = 0) -> np.ndarray:
    """A W×H scene: a smooth colour field, the faces pasted at ``boxes`` (moved right by ``shift``)."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([60 + 0.4 * x, 90 + 0.3 * y, 140 + 0.1 * (x - y)], -1)
    for f, (x0, y0, x1, y1) in zip(faces, boxes):
        img[y0:y1, x0 + shift:x1 + shift] = cv2.resize(f, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return np.clip(img, 0, 255).astype(np.uint8)


def on(face: Face, box) -> bool:
    """A detection of the face pasted at ``box``: centred in it, at least 30 % of its side."""
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    return box[0] < cx < box[2] and box[1] < cy < box[3] and face.side >= 0.3 * (box[2] - box[0])


@pytest.fixture(scope="module")
def portraits() -> np.ndarray:
    return render_faces(8, 128, seed=4)[[1, 5]]  # two that all three detectors find


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A 16² generator trained for a few steps on procedural faces: enough to paint with."""
    from facegan.config import TrainConfig
    from facegan.models.dcgan import ModelConfig
    from facegan.train.loop import train

    out = tmp_path_factory.mktemp("anon") / "run"
    cfg = TrainConfig(preset="tiny", data="procedural:128", out=str(out), batch=16, max_images=16 * 6, log_every=2,
                      sample_every=100, ckpt_every=6, keep=1, grid=4, model=ModelConfig(res=16, z_dim=8, g_width=8,
                                                                                          d_width=8, width_cap=32))
    return train(cfg, progress=False).run


@pytest.mark.slow
def test_detectors_find_the_pasted_faces(portraits):
    img = scene(portraits)
    for name in detect.DETECTORS:
        found = detect.detector(name, upsample=1 if name == "cnn" else 0)(img)  # the CNN sees faces from 80 px
        for box in BOXES:
            assert any(on(f, box) for f in found), (name, box, [f.box for f in found])
    hog = detect.detector("hog")(img)
    pts = detect.landmarks(img, hog[0])
    assert pts.shape == (68, 2) and align.anchors(pts).shape == (3, 2)
    assert detect.detector("hog")(np.full((H, W, 3), 128, np.uint8)) == []
    with pytest.raises(FaceganError, match="--detector must be one of"):
        detect.detector("yolo")


def test_similarity_is_recovered_and_inverted():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (3, 2))
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -2.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = align.similarity(src, src @ rot.T + shift)
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], shift)
    assert np.allclose(align.apply(align.invert(m), align.apply(m, src)), src)


def test_pixelate_and_blur_touch_only_the_grown_region():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    face = Face((40, 30, 80, 70), 1.0, "hog")
    x0, y0, x1, y1 = obscure.region(img, face)
    assert (x0, y0, x1, y1) == (34, 24, 86, 76)  # 15 % of 40 px on each side
    for fn in (obscure.pixelate, obscure.blur):
        out = img.copy()
        fn(out, face)
        outside = np.ones(img.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(out[outside], img[outside])
        assert np.abs(out[y0:y1, x0:x1].astype(int) - img[y0:y1, x0:x1]).mean() > 30  # noise gone
    out = img.copy()
    obscure.pixelate(out, face)
    assert len(np.unique(out[y0:y1, x0:x1].reshape(-1, 3), axis=0)) <= 8 * 8 + 16  # about 8 blocks a side


@pytest.mark.slow
def test_replace_paints_a_new_face_and_the_audit_says_how(portraits, model, tmp_path):
    img = scene(portraits)
    cv2.rectangle(img, TINY_BOX[:2], (TINY_BOX[2] - 1, TINY_BOX[3] - 1), (0, 0, 0), -1)
    Image.fromarray(img).save(tmp_path / "street.png")
    anon, setup = build(model, seed=3, steps=8, starts=2)
    real_find = anon.find
    anon.find = lambda im: real_find(im) + [Face(TINY_BOX, 1.0, "hog")]  # plus one face too small to replace
    audit = anonymize_path(anon, tmp_path / "street.png", tmp_path / "out", setup, progress=False)
    out = np.asarray(Image.open(tmp_path / "out" / "street.png"))
    assert out.shape == img.shape
    faces = audit["files"][0]["faces"]
    assert json.loads((tmp_path / "out" / "audit.json").read_text())["files"][0]["faces"] == faces
    by_box = {tuple(f["box"]): f for f in faces}
    tiny = by_box[TINY_BOX]
    assert tiny["method"] == "pixelate" and "too small" in tiny["reason"] and "seed" not in tiny
    big = [f for f in faces if f["box"] != list(TINY_BOX)]
    assert len(big) == 2
    for f in big:
        assert f["method"] in ("replace", "pixelate") and f["reason"]
        x0, y0, x1, y1 = f["box"]
        changed = np.abs(out[y0:y1, x0:x1].astype(int) - img[y0:y1, x0:x1]).mean()
        assert changed > 5, f  # never left as it was
        if f["method"] == "replace":
            assert isinstance(f["seed"], int)
    assert setup["template"] and len(setup["template"]) == 3
    far = np.ones(img.shape[:2], bool)
    for f in faces:
        x0, y0, x1, y1 = obscure.region(img, Face(tuple(f["box"]), 1.0, "hog"))
        far[max(0, y0 - 40):y1 + 40, max(0, x0 - 40):x1 + 40] = False
    assert np.array_equal(out[far], img[far])  # the rest of the picture is untouched


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_face(portraits, model):
    img = scene(portraits)
    runs = []
    anon, _ = build(model, mode="replace", steps=6, starts=2, template=align.DEFAULT_TEMPLATE)
    anon.verify = False  # compare the replacements themselves
    for seed in (5, 5, 6):
        anon.seed = seed
        out, recs = anon.image(img)
        assert [r.method for r in recs] == ["replace", "replace"], [r.reason for r in recs]
        runs.append(out)
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


@pytest.mark.slow
def test_fail_closed_when_replacement_breaks_or_keeps_the_identity(portraits, model, monkeypatch):
    from facegan.anonymize.replace import MIXES

    img = scene(portraits)
    anon, setup = build(model, seed=0, steps=4, starts=1, template=align.DEFAULT_TEMPLATE)
    assert setup["mixes"] == list(MIXES) and len(MIXES) >= 2
    # dlib says: the first face still matches on the first attempt only, the second on every attempt
    distances = iter([0.3, 0.7] + [0.3] * len(MIXES))
    monkeypatch.setattr(anon, "_identity_distance", lambda *a: next(distances))
    out, recs = anon.image(img)
    assert [(r.method, r.attempt) for r in recs] == [("replace", 1), ("pixelate", None)], [r.reason for r in recs]
    assert recs[0].identity_distance == 0.7 and "every replacement kept the identity" in recs[1].reason
    monkeypatch.setattr(anon, "_identity_distance", lambda *a: 0.3)  # never unlike the person
    faces = anon.detect(img)
    out, recs = anon.image(img, faces=faces)
    expected = img.copy()
    for f in faces:  # with the landmarks the pipeline read
        obscure.pixelate(expected, f)
    assert np.array_equal(out, expected)  # every attempt undone: pixelated from the original, nothing else touched
    calls = []
    monkeypatch.setattr(anon, "_identity_distance", lambda *a: calls.append(1) or 0.3)
    anon.image(img, faces=anon.detect(img)[:1], warm={0: (None, 5, 1)})  # a video track starts at the attempt that worked
    assert len(calls) == len(MIXES) - 1

    def broken(*a, **k):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(anon.replacer, "fit", broken)
    out, recs = anon.image(img)
    assert recs and all(r.method == "pixelate" and "replacement failed" in r.reason for r in recs)
    for r in recs:
        x0, y0, x1, y1 = r.box
        assert np.abs(out[y0:y1, x0:x1].astype(int) - img[y0:y1, x0:x1]).mean() > 5


def test_tracker_keeps_one_identity_per_person():
    t = Tracker(seed=1)
    a, b = Face((0, 0, 50, 50), 1, "hog"), Face((100, 0, 150, 50), 1, "hog")
    first = [x.id for x in t.assign([a, b], 0)]
    moved = [replace(b, box=(104, 2, 154, 52)), replace(a, box=(3, 1, 53, 51))]  # other order, moved a little
    assert [x.id for x in t.assign(moved, 1)] == first[::-1]
    assert [x.id for x in t.assign([], 2 + 5)] == []
    assert t.assign([a], 2 + 5 + 6)[0].id == 2  # gone for longer than the gap: a new person


@pytest.mark.slow
def test_video_round_trip_keeps_size_frames_and_identity(portraits, model, tmp_path):
    ffmpeg = pytest.importorskip("imageio_ffmpeg")
    src, wav = tmp_path / "clip.mp4", tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as tone:  # 0.6 s of 440 Hz: the clip's sound track
        tone.setnchannels(1), tone.setsampwidth(2), tone.setframerate(16000)
        tone.writeframes((np.sin(np.arange(9600) * 2 * np.pi * 440 / 16000) * 8000).astype("<i2").tobytes())
    frames = [scene(portraits, shift=2 * k) for k in range(6)]
    w = ffmpeg.write_frames(str(src), (W, H), fps=10, macro_block_size=2, output_params=["-crf", "10"],
                            audio_path=str(wav), audio_codec="aac")
    w.send(None)
    for f in frames:
        w.send(f)
    w.close()
    anon, _ = build(model, mode="replace", seed=2, steps=4, starts=1, template=align.DEFAULT_TEMPLATE)
    anon.verify = False  # the identity check has its own test; here: tracking
    records, n = anonymize_video(anon, src, tmp_path / "out.mp4", progress=False)
    reader = ffmpeg.read_frames(str(tmp_path / "out.mp4"))
    meta = next(reader)
    out = [np.frombuffer(r, np.uint8).reshape(H, W, 3) for r in reader]
    assert n == len(out) == 6 and tuple(meta["size"]) == (W, H)
    assert meta.get("audio_codec"), meta  # the sound track came through
    tracks: dict[int, list] = {}
    for r in records:
        tracks.setdefault(r.track, []).append(r)
    assert len(tracks) == 2, records
    for recs in tracks.values():  # one synthetic person per real one: one seed, however often it is replaced
        replaced = [r for r in recs if r.method == "replace"]
        assert len(replaced) >= 4 and len({r.seed for r in replaced}) == 1, [(r.method, r.reason) for r in recs]
    assert {r.frame for r in records} == set(range(6))


@pytest.mark.slow
def test_zero_faces_bad_files_and_huge_images_are_clean(tmp_path, model):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 48), (90, 120, 200)).save(tmp_path / "in" / "sky.jpg")
    (tmp_path / "in" / "notes.png").write_bytes(b"not an image")
    p = facegan_in_process("anonymize", tmp_path / "in", "--model", model, "--out", tmp_path / "out", "--steps", "2")
    assert p.returncode == 0, p.stderr
    assert "no faces found" in p.stdout and "notes.png" in p.stderr
    audit = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert audit["files"][0]["faces"] == [] and audit["skipped"][0]["file"] == "notes.png"
    assert (tmp_path / "out" / "sky.jpg").is_file()
    # one bad file alone, a missing model, --out inside the input, unknown options: one line, exit 2
    for args, needle in [
        ((tmp_path / "in" / "notes.png", "--mode", "pixelate"), "notes.png"),
        ((tmp_path / "in", "--mode", "replace"), "--model"),
        ((tmp_path / "in", "--mode", "smudge"), "--mode must be one of"),
        ((tmp_path / "in", "--detector", "yolo", "--mode", "blur"), "--detector must be one of"),
        ((tmp_path / "nowhere.jpg", "--mode", "blur"), "input not found"),
    ]:
        p = facegan_in_process("anonymize", *args, "--out", tmp_path / "o2")
        assert p.returncode == 2 and needle in _one_error_line(p), (args, p.stderr)
    p = facegan_in_process("anonymize", tmp_path / "in", "--mode", "blur", "--out", tmp_path / "in" / "o")
    assert p.returncode == 2 and "inside it" in _one_error_line(p)
    huge = np.zeros((6000, 8000, 3), np.uint8)
    huge[:, :, 1] = 120
    anon, _ = build(None, mode="pixelate")
    out, recs = anon.image(huge)
    assert recs == [] and out.shape == huge.shape


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    with pytest.raises(FaceganError, match=r"facegan\[anonymize\]"):
        detect.detector("hog")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    p = facegan_in_process("anonymize", tmp_path / "a.png", "--mode", "blur", "--out", tmp_path / "o")
    assert p.returncode == 2 and "facegan[anonymize]" in _one_error_line(p)


@pytest.mark.slow
def test_poisson_blend_and_the_upscaler_path(portraits, model):
    from facegan.anonymize.replace import Replacer
    from facegan.models.srresnet import SRConfig, SRGenerator
    from facegan.saved import load_generator

    G = load_generator(model)
    sr = SRGenerator(SRConfig(scale=4, width=8, blocks=1)).eval()  # untrained: exactly bicubic ×4
    rep = Replacer(G, align.DEFAULT_TEMPLATE, upscaler=sr, steps=4, starts=1, blend="poisson")
    big = rep._enlarge(np.zeros((16, 16, 3), np.uint8) + 77, 100)
    assert big.shape == (100, 100, 3) and np.abs(big.astype(int) - 77).max() <= 1  # 16 → 64 by the net, → 100
    img = scene(portraits)
    anon = Anonymizer(detect.detector("hog"), rep, mode="replace", seed=1, verify=False)
    out, recs = anon.image(img)
    assert [r.method for r in recs] == ["replace", "replace"], [r.reason for r in recs]
    for r in recs:
        x0, y0, x1, y1 = r.box
        assert np.abs(out[y0:y1, x0:x1].astype(int) - img[y0:y1, x0:x1]).mean() > 5
    with pytest.raises(FaceganError, match="--blend must be one of"):
        Replacer(G, align.DEFAULT_TEMPLATE, blend="hard")


@pytest.mark.slow
def test_project_finds_and_aligns_the_face_in_an_ordinary_photo(portraits, model, tmp_path):
    img = scene(portraits[:1], boxes=[(150, 60, 150 + FACE_PX, 60 + FACE_PX)])  # one face, off centre in a wide photo
    Image.fromarray(img).save(tmp_path / "photo.png")
    p = facegan_in_process("project", tmp_path / "photo.png", "--model", model, "--crop", "align", "--steps", "3",
                           "--starts", "1", "--no-features", "--out", tmp_path / "fit")
    assert p.returncode == 0, p.stderr
    assert "target: the face at" in p.stdout and "aligned by its landmarks" in p.stdout
    target = np.asarray(Image.open(tmp_path / "fit" / "target.png"))
    assert target.shape == (16, 16, 3)
    centre = cv2.resize(img[:, 40:280], (16, 16), interpolation=cv2.INTER_AREA)  # what --crop center would fit
    face = cv2.resize(portraits[0], (16, 16), interpolation=cv2.INTER_AREA)
    assert np.abs(target.astype(int) - face).mean() < np.abs(centre.astype(int) - face).mean()  # the face, not the scene
    Image.new("RGB", (200, 160), (90, 120, 200)).save(tmp_path / "sky.png")
    p = facegan_in_process("project", tmp_path / "sky.png", "--model", model, "--crop", "align", "--out", tmp_path / "f2")
    assert p.returncode == 2 and "no face found in the photo" in _one_error_line(p)
    p = facegan_in_process("project", tmp_path / "sky.png", "--model", model, "--crop", "squint", "--out", tmp_path / "f3")
    assert p.returncode == 2 and "--crop must be one of center, celeba, none, align" in _one_error_line(p)
