"""`/v1/generate`'s "filter": only single faces ("face"); also nobody from the training photos and
none twice ("private"), every rejected candidate named with its reason.

The model renders known images (drawn faces, noise, a training face, a repeat) for faces (0, i), so
each verdict is known; the detector and the embedding are the real ones (the anonymize extra).
"""

from __future__ import annotations

import importlib.util
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from conftest import TINY

pytest.importorskip("fastapi", reason="facegan[serve] is not installed")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="the anonymize extra (dlib) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from facegan.data.procedural import render_faces  # noqa: E402
from facegan.metrics import fd_face  # noqa: E402
from facegan.models.dcgan import Generator, latents  # noqa: E402
from facegan.serve.app import create_app  # noqa: E402
from facegan.serve.engine import Model, weights_sha256  # noqa: E402
from facegan.serve.filters import Filters  # noqa: E402

TRAIN = render_faces(12, 64, seed=7)
FRESH = render_faces(13, 64, seed=11)  # the detector finds faces 0, 1, 7, 8, 10, 11 and 12 of them
NOISE = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
# faces (0, i): noise, fresh 0, noise, a training face, fresh 0 again, then fresh faces the detector finds
POOL = np.concatenate([NOISE[:1], FRESH[:1], NOISE[1:], TRAIN[4:5], FRESH[:1], FRESH[[1, 7, 8, 10, 11, 12]]])
P = 0.3  # drawn faces all look alike to dlib's embedding (0.25–0.5 apart): the same person below 0.3 here


def model() -> Model:
    torch.manual_seed(0)
    G = Generator(TINY).eval()
    first = {float(z[0]): i for i, z in enumerate(latents(len(POOL), TINY.z_dim, 0))}
    return Model(G=G, render=lambda z: np.stack([POOL[first.get(float(row[0]), 0)] for row in z]), runtime="torch",  # 0: warm-up
                 sha256=weights_sha256(G), info={"preset": "tiny"}, card="")


def test_face_keeps_single_faces_and_names_the_rest():
    with TestClient(create_app(model())) as c:
        r = c.post("/v1/generate", json={"seed": 0, "n": 3, "filter": "face"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [(f["seed"], f["index"]) for f in body["faces"]] == [(0, 1), (0, 3), (0, 4)]
        assert body["rejected"] == [{"seed": 0, "index": 0, "reason": "no_face"}, {"seed": 0, "index": 2, "reason": "no_face"}]
        assert body["filter"] == "face" and body["width"] == 64
        r = c.post("/v1/generate", json={"seed": 0, "n": 2, "filter": "face", "as": "zip"})
        assert r.status_code == 200 and r.headers["X-Facegan-Faces"] == "0:1,0:3"
        assert r.headers["X-Facegan-Rejected"] == "0:0:no_face,0:2:no_face"
        manifest = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read("manifest.json"))
        assert manifest["filter"] == "face" and [x["index"] for x in manifest["rejected"]] == [0, 2]
        r = c.post("/v1/generate", json={"seed": 0, "n": 2, "filter": "face", "as": "grid"})
        assert r.status_code == 200 and r.headers["X-Facegan-Rejected"] == "0:0:no_face,0:2:no_face"
        r = c.post("/v1/generate", json={"seeds": [0], "filter": "face"})
        assert r.status_code == 422 and "none of the 1 faces tried passed the 'face' filter (no face)" in r.json()["error"]
        r = c.post("/v1/generate", json={"seed": 0, "n": 1, "filter": "private"})
        assert r.status_code == 400 and "start the server with --privacy-check" in r.json()["error"]
        assert "rejected" not in c.post("/v1/generate", json={"seed": 0, "n": 1}).json()  # unfiltered: as before


def test_private_also_refuses_training_identities_and_repeats():
    filters = Filters(fd_face.embed(TRAIN).astype(np.float32), privacy=P)
    with TestClient(create_app(model(), filters=filters)) as c:
        r = c.post("/v1/generate", json={"seed": 0, "n": 3, "filter": "private"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [(f["seed"], f["index"]) for f in body["faces"]] == [(0, 1), (0, 5), (0, 6)]
        assert [(x["index"], x["reason"]) for x in body["rejected"]] == [
            (0, "no_face"), (2, "no_face"), (3, "training_identity"), (4, "duplicate")]
