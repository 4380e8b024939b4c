"""models/face_resnet.py: dlib's face-recognition ResNet in torch gives dlib's own descriptors, and a
file that is not that network is refused in one line."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from facegan.data.procedural import render_faces
from facegan.errors import FaceganError
from facegan.facemodels import model_file
from facegan.metrics import fd_face
from facegan.models import face_resnet

pytestmark = pytest.mark.skipif(importlib.util.find_spec("dlib") is None or
                                importlib.util.find_spec("face_recognition_models") is None,
                                reason="the anonymize extra (dlib and its weights) is not installed")


def test_the_torch_network_gives_dlibs_descriptors():
    import dlib

    faces = np.concatenate([render_faces(12, 64, seed=3), np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)])
    chips = fd_face.chips(faces)
    want = np.array([np.asarray(v) for v in dlib.face_recognition_model_v1(model_file(fd_face.WEIGHTS)).compute_face_descriptor(chips)])
    got = fd_face.embed(faces)
    assert got.shape == (16, 128)
    assert np.abs(got - want).max() < 1e-5  # float32 arithmetic in another order
    assert np.linalg.norm(got[0] - got[1]) > 0.1  # and not a constant


def test_a_file_that_is_not_the_network_is_refused(tmp_path):
    data = open(model_file(fd_face.WEIGHTS), "rb").read()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FaceganError, match="is not dlib's face-recognition ResNet v1"):
        face_resnet.load(cut)
    other = tmp_path / "other.dat"
    other.write_bytes(open(model_file("shape_predictor_5_face_landmarks.dat"), "rb").read())
    with pytest.raises(FaceganError, match="is not dlib's face-recognition ResNet v1"):
        face_resnet.load(other)
    net = face_resnet.load(model_file(fd_face.WEIGHTS))
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    assert torch.allclose(net.mean.flatten(), torch.tensor([122.782, 117.001, 104.298]), atol=1e-3)  # the file's means
