"""Property-based hostile inputs (hypothesis): corrupted images and corrupted checkpoints.

The property, for every generated input: the command ends with exit code 0 or 2, with either a
result or exactly one ``error:`` line (a bad image is a named skip), never a traceback, never a
temporary file left behind, and with memory bounded.
"""

from __future__ import annotations

import json
import random
import resource
import struct

import numpy as np
import pytest
from conftest import TINY, real_state
from hostile import FORMATS, good_image, safetensors_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability import cli, one_error, temporaries

from facegan import checkpoint
from facegan.config import TrainConfig
from facegan.data.images import BadImage, load_image

MAX_RSS_KB = 4 << 20  # 4 GB: far above any case here, far below what an unchecked config would ask for
FIXTURES = dict(deadline=None, database=None,  # no example database written into the repository
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

edits = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=0, max_size=24)
cuts = st.one_of(st.none(), st.floats(0, 1, exclude_max=True))


def corrupt(data: bytes, at: list[tuple[float, int]], cut: float | None) -> bytes:
    """``data`` with bytes overwritten at fractional positions, then optionally cut short."""
    b = bytearray(data)
    for pos, value in at:
        b[int(pos * len(b))] = value
    return bytes(b if cut is None else b[: int(cut * len(b))])


@settings(max_examples=300, **FIXTURES)
@given(seed=st.integers(0, 2**32 - 1), fmt=st.sampled_from(FORMATS), at=edits, cut=cuts,
       w=st.integers(4, 80), h=st.integers(4, 80))
def test_a_corrupted_image_is_a_sample_or_a_named_skip(seed, fmt, at, cut, w, h):
    data = corrupt(good_image(random.Random(seed), fmt, (w, h)), at, cut)
    try:
        out = load_image(data, 16)
    except BadImage as e:
        assert str(e)
    else:
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8


@settings(max_examples=15, **FIXTURES)
@given(files=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.sampled_from(FORMATS), edits, cuts), min_size=1, max_size=10))
def test_prepare_on_a_folder_of_corrupted_images(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("corrupt")
    folder = root / "images"
    folder.mkdir()
    for i, (seed, fmt, at, cut) in enumerate(files):
        (folder / f"f{i}.{fmt.lower()}").write_bytes(corrupt(good_image(random.Random(seed), fmt, (32, 32)), at, cut))
    out = root / "images.npy"
    code, _, err = cli("prepare", folder, "--res", "16", "--out", out, "--workers", "1")
    assert code in (0, 2) and "Traceback" not in err
    if code == 0:
        manifest = json.loads(out.with_name(out.name + ".json").read_text())
        assert manifest["count"] + manifest["skipped_count"] == len(files)  # every file packed or named
        assert all(s["reason"] for s in manifest["skipped"])
    else:
        assert "no usable images" in one_error(code, err)
    assert not temporaries(root)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < MAX_RSS_KB


CFG = TrainConfig(preset="tiny", batch=4, max_images=64, model=TINY)
TENSORS, META = real_state(CFG)
META = {"format": checkpoint.FORMAT, "step": 1, **META}
VALID = safetensors_bytes(TENSORS, META)


def _generate_on(tmp_path_factory, data: bytes) -> None:
    folder = tmp_path_factory.mktemp("ckpt")
    path = folder / "ckpt-00000001.safetensors"
    path.write_bytes(data)
    code, _, err = cli("generate", path, "--grid", folder / "g.png")
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:
        one_error(code, err)
    else:
        assert (folder / "g.png").stat().st_size > 0
    assert not temporaries(folder)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < MAX_RSS_KB


@pytest.mark.slow
@settings(max_examples=60, **FIXTURES)
@given(at=edits, cut=cuts)
def test_generate_on_a_checkpoint_with_corrupted_bytes(tmp_path_factory, at, cut):
    _generate_on(tmp_path_factory, corrupt(VALID, at, cut))


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)


def _paths(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out += _paths(v, prefix + (k,))
    return out


META_PATHS = sorted(_paths(META), key=str)


@pytest.mark.slow
@settings(max_examples=80, **FIXTURES)
@given(path=st.sampled_from(META_PATHS), value=json_values, drop=st.booleans())
def test_generate_on_a_checkpoint_with_a_doctored_header(tmp_path_factory, path, value, drop):
    meta = json.loads(json.dumps(META))
    node = meta
    for k in path[:-1]:
        node = node[k]
    if drop:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    _generate_on(tmp_path_factory, safetensors_bytes(TENSORS, meta))


@settings(max_examples=40, **FIXTURES)
@given(name=st.sampled_from(sorted(TENSORS)), shape=st.lists(st.integers(0, 9), max_size=4),
       dtype=st.sampled_from(["F32", "F64", "F16", "I64", "U8", "BOOL", "X9"]), offset=st.integers(0, 2**40))
def test_generate_on_a_checkpoint_whose_tensor_table_lies(tmp_path_factory, name, shape, dtype, offset):
    """The safetensors table itself rewritten: shapes, dtypes and offsets that do not match the bytes."""
    n = struct.unpack("<Q", VALID[:8])[0]
    header = json.loads(VALID[8 : 8 + n])
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + 4]}
    body = json.dumps(header).encode()
    _generate_on(tmp_path_factory, struct.pack("<Q", len(body)) + body + VALID[8 + n :])
