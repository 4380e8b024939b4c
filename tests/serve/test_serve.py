"""`facegan serve`: every route and limit, the determinism of a face's bytes, auth, micro-batching and a full queue."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image
from test_cli import facegan_in_process

pytest.importorskip("fastapi", reason="facegan[serve] is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from facegan import viz  # noqa: E402
from facegan.models.dcgan import Generator  # noqa: E402
from facegan.models.srresnet import SRConfig, SRGenerator  # noqa: E402
from facegan.sample import faces as sample_faces  # noqa: E402
from facegan.sample import render  # noqa: E402
from facegan.serve.app import create_app  # noqa: E402
from facegan.serve.batcher import Batcher, QueueFull  # noqa: E402
from facegan.serve.engine import Model, load_model, weights_sha256  # noqa: E402
from facegan.serve.limits import Limits  # noqa: E402
from facegan.serve.run import bind, exposure_warning  # noqa: E402


def _model(upscaler: bool = True, render_fn=None) -> Model:
    torch.manual_seed(0)
    G = Generator(TINY).eval()
    for m in G.modules():  # running statistics that are not the identity, so eval mode matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2)
    SR = SRGenerator(SRConfig(scale=2, width=8, blocks=1)).eval() if upscaler else None
    return Model(G=G, render=render_fn or (lambda z: render(G, z, len(z))), runtime="torch", sha256=weights_sha256(G),
                 info={"preset": "tiny", "metrics": {"fid": 12.5}}, card="# tiny card", upscaler=SR)


@pytest.fixture(scope="module")
def model() -> Model:
    return _model()


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model)) as c:
        yield c


def _png(b64_or_bytes) -> np.ndarray:
    data = base64.b64decode(b64_or_bytes) if isinstance(b64_or_bytes, str) else b64_or_bytes
    return np.asarray(Image.open(io.BytesIO(data)))


def gen(client, **body):
    return client.post("/v1/generate", json=body)


# -- /v1/generate ----------------------------------------------------------------------------------------------

def test_generate_json_names_the_model_and_each_face(client, model):
    r = gen(client, seed=5, n=4, start=2)
    assert r.status_code == 200 and r.headers["x-facegan-model"] == model.sha256
    j = r.json()
    assert j["model"] == model.sha256 and j["width"] == j["height"] == 16
    assert [(f["seed"], f["index"]) for f in j["faces"]] == [(5, 2), (5, 3), (5, 4), (5, 5)]
    want = sample_faces(model.G, 4, seed=5, start=2)  # the CLI's faces, pixel for pixel
    assert np.array_equal(np.stack([_png(f["image"]) for f in j["faces"]]), want)


def test_seeds_list_gives_face_zero_of_each(client, model):
    j = gen(client, seeds=[9, 3, 9]).json()
    assert [(f["seed"], f["index"]) for f in j["faces"]] == [(9, 0), (3, 0), (9, 0)]
    assert j["faces"][0]["image"] == j["faces"][2]["image"] != j["faces"][1]["image"]
    assert np.array_equal(_png(j["faces"][1]["image"]), sample_faces(model.G, 1, seed=3)[0])


def test_a_face_has_the_same_bytes_alone_and_inside_64_whatever_else_is_in_flight(model):
    """The service's promise: (model, seed, index, ψ) → bytes, across n, batching and concurrency."""
    slow = Limits(max_wait_ms=30)  # a long window so concurrent requests really share forward passes
    with TestClient(create_app(model, slow)) as c:
        def ask(body):
            return c.post("/v1/generate", json=body).json()["faces"]

        bodies = [dict(seed=77, n=64, truncation=0.8)] + [dict(seed=77, start=i, n=1, truncation=0.8) for i in (0, 13, 63)] + \
                 [dict(seed=s, n=7) for s in range(8)]  # other traffic in the same batches
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, bodies))
        batches = c.get("/metrics").text
    big = {f["index"]: f["image"] for f in answers[0]}
    for single in answers[1:4]:
        (f,) = single
        assert f["image"] == big[f["index"]]
    assert 'facegan_batch_faces_bucket{le="1"} 0' in batches  # every pass held more than one request's lone face
    alone = ask_once(model, dict(seed=77, start=13, n=1, truncation=0.8))
    assert alone == big[13]


def ask_once(model, body) -> str:
    with TestClient(create_app(model)) as c:
        return c.post("/v1/generate", json=body).json()["faces"][0]["image"]


def test_truncation_changes_faces_and_is_reproducible(client):
    a, b, c = (gen(client, seed=1, n=2, truncation=t).json()["faces"] for t in (0.5, 0.5, None))
    assert a == b and a != c


@pytest.mark.parametrize("fmt,mode", [("png", "RGB"), ("webp", "RGB"), ("jpeg", "RGB")])
def test_grid_in_each_format(client, model, fmt, mode):
    r = gen(client, seed=2, n=9, format=fmt, **{"as": "grid"})
    assert r.status_code == 200 and r.headers["content-type"] == f"image/{fmt}"
    assert r.headers["x-facegan-faces"] == ",".join(f"2:{i}" for i in range(9))
    img = Image.open(io.BytesIO(r.content))
    assert img.format == fmt.upper() and img.mode == mode and img.size == (3 * 18 + 2, 3 * 18 + 2)
    if fmt != "jpeg":  # lossless: the grid is exactly the faces
        assert np.array_equal(np.asarray(img), viz.grid(sample_faces(model.G, 9, seed=2)))


def test_zip_holds_one_file_per_face_and_a_manifest(client, model):
    r = gen(client, seed=4, n=3, **{"as": "zip"})
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert zf.namelist() == ["seed4-000000.png", "seed4-000001.png", "seed4-000002.png", "manifest.json"]
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["model"] == model.sha256 and [f["index"] for f in manifest["faces"]] == [0, 1, 2]
    assert np.array_equal(_png(zf.read("seed4-000001.png")), sample_faces(model.G, 1, seed=4, start=1)[0])
    assert gen(client, seed=4, n=3, **{"as": "zip"}).content == r.content  # the same faces, the same zip bytes


def test_upscaled_faces_are_the_cli_pipelines_faces(client, model):
    j = gen(client, seed=1, n=3, upscale=True).json()
    assert j["width"] == 32
    want = sample_faces(model.G, 3, seed=1, upscaler=model.upscaler)  # `generate --upscale`, pixel for pixel
    assert np.array_equal(np.stack([_png(f["image"]) for f in j["faces"]]), want)
    (one,) = gen(client, seed=1, start=2, n=1, upscale=True).json()["faces"]
    assert np.array_equal(_png(one["image"]), want[2])


@pytest.mark.parametrize("body,where", [
    (dict(seed=-1), "seed"), (dict(seed=2**32), "seed"), (dict(seed=1, n=65), "n"), (dict(seed=1, n=0), "n"),
    (dict(seeds=list(range(65))), "seeds"), (dict(seeds=[]), "seeds"), (dict(seeds=[1, -2]), "seeds.1"),
    (dict(seed=1, bogus=True), "bogus"), (dict(seed="3"), "seed"), (dict(seed=1.5), "seed"), (dict(seed=True), "seed"),
    (dict(), "body"), (dict(seed=1, seeds=[2]), "body"), (dict(seeds=[1], n=3), "body"), (dict(seed=1, truncation=0), "truncation"),
    (dict(seed=1, truncation=-1), "truncation"), (dict(seed=1, format="gif"), "format"), (dict(seed=1, **{"as": "tar"}), "as"),
    (dict(seed=1, start=-5), "start"),
])
def test_invalid_generate_requests_are_422_naming_the_field(client, body, where):
    r = gen(client, **body)
    assert r.status_code == 422 and r.json()["error"].startswith(where + ":"), r.text


def test_bad_json_and_oversized_bodies_are_refused(client):
    r = client.post("/v1/generate", content=b'{"seed": 1,', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]
    r = client.post("/v1/generate", content=b" " * (65 << 10) + b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v1/generate", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_limits_follow_the_flags(model):
    with TestClient(create_app(model, Limits(max_n=4, max_frames=5, max_queue=8))) as c:
        assert gen(c, seed=1, n=5).status_code == 422 and gen(c, seed=1, n=4).status_code == 200
        assert c.post("/v1/interpolate", json=dict(seeds=[1, 2], frames=6)).status_code == 422
        schema = c.get("/openapi.json").json()["components"]["schemas"]["GenerateRequest"]["properties"]["n"]
        assert schema["maximum"] == 4


# -- /v1/interpolate --------------------------------------------------------------------------------------------

def test_interpolate_gif_has_the_frames_and_starts_on_the_first_face(client, model):
    r = client.post("/v1/interpolate", json=dict(seeds=[3, 8], frames=12))
    gif = Image.open(io.BytesIO(r.content))
    total_ms = 0
    for k in range(gif.n_frames):  # Pillow merges identical neighbours into one longer frame: count time, not frames
        gif.seek(k)
        total_ms += gif.info["duration"]
    assert r.headers["content-type"] == "image/gif" and total_ms == 12 * 50 and gif.size == (16, 16)
    frames = client.post("/v1/interpolate", json=dict(seeds=[3, 8], frames=12, format="json")).json()["frames"]
    assert len(frames) == 12
    assert np.array_equal(_png(frames[0]), sample_faces(model.G, 1, seed=3)[0])
    assert np.array_equal(_png(frames[-1]), sample_faces(model.G, 1, seed=8)[0])  # no loop: ends on the last face


def test_interpolate_between_any_two_faces_and_as_a_strip(client, model):
    frames = client.post("/v1/interpolate", json=dict(faces=[{"seed": 3, "index": 5}, {"seed": 1, "index": 2}], frames=4,
                                                      format="json", mode="linear")).json()["frames"]
    assert np.array_equal(_png(frames[0]), sample_faces(model.G, 1, seed=3, start=5)[0])
    r = client.post("/v1/interpolate", json=dict(seeds=[1, 2, 3], frames=30, format="png"))
    assert Image.open(io.BytesIO(r.content)).size == (10 * 18 + 2, 2 * 18 + 2)  # one row of 10 per segment


def test_interpolate_mp4_when_the_video_extra_is_there(client):
    r = client.post("/v1/interpolate", json=dict(seeds=[1, 2], frames=8, format="mp4"))
    if viz.video_available():
        assert r.status_code == 200 and r.content[4:8] == b"ftyp"
    else:
        assert r.status_code == 400 and "video" in r.json()["error"]


@pytest.mark.parametrize("body", [dict(seeds=[1], frames=4), dict(seeds=[1, 2], frames=121), dict(seeds=[1, 2], frames=1),
                                  dict(seeds=[1, 2], faces=[{"seed": 1}, {"seed": 2}]), dict(seeds=[1, 2], mode="spline"),
                                  dict(faces=[{"seed": 1, "index": -1}, {"seed": 2}]), dict(seeds=[1, 2], fps=0),
                                  dict(seeds=list(range(20)), format="png", frames=10)])
def test_invalid_interpolations_are_4xx(client, body):
    r = client.post("/v1/interpolate", json=body)
    assert r.status_code == 422 and r.json()["error"], r.text


# -- /v1/upscale ------------------------------------------------------------------------------------------------

def _photo(w: int, h: int) -> bytes:
    return viz.encode_png((np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8))


def _png_header(w: int, h: int) -> bytes:
    """A PNG that declares w×h pixels and holds almost none: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_upscale_raw_body_and_multipart(client, model):
    photo = _photo(40, 30)
    want = model.upscaler.upscale(_png(photo)[None])[0]
    for r in (client.post("/v1/upscale", content=photo, headers={"content-type": "image/png"}),
              client.post("/v1/upscale", files={"image": ("face.png", photo, "image/png")})):
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert np.array_equal(_png(r.content), want)


def test_large_images_upscale_in_tiles_like_the_whole_image(model):
    from facegan.upscale import upscale_image

    img = _png(_photo(420, 300))
    assert np.array_equal(upscale_image(model.upscaler, img, tile=128), model.upscaler.upscale(img[None])[0])


@pytest.mark.parametrize("data,status,words", [
    (b"", 422, "empty"), (b"this is not an image", 422, "not a usable image"), (_png_header(5000, 4000), 413, "pixels"),
    (_png_header(30000, 30000), 413, "decompression bomb"), (_png_header(3000, 3000), 413, "upscaled"),
])
def test_bad_uploads_are_refused_before_decoding(client, data, status, words):
    r = client.post("/v1/upscale", content=data, headers={"content-type": "image/png"})
    assert r.status_code == status and words in r.json()["error"], r.text


def test_uploads_over_the_size_limit_are_413_declared_or_streamed(client):
    big = b"\0" * ((10 << 20) + 1)
    assert client.post("/v1/upscale", content=big).status_code == 413
    assert client.post("/v1/upscale", content=iter([big[: 1 << 20]] * 11)).status_code == 413  # chunked: no length


def test_no_upscaler_means_400():
    with TestClient(create_app(_model(upscaler=False))) as c:
        assert c.post("/v1/upscale", content=_photo(8, 8)).status_code == 400
        assert gen(c, seed=1, upscale=True).status_code == 400
        assert c.get("/v1/model").json()["upscale"] is None


# -- model, health, metrics, docs, studio --------------------------------------------------------------------

def test_model_health_docs_and_studio(client, model):
    info = client.get("/v1/model").json()
    assert info["sha256"] == model.sha256 and info["metrics"] == {"fid": 12.5} and info["card"] == "# tiny card"
    assert info["limits"]["max_n"] == 64 and info["upscale"] == 2 and info["res"] == 16
    assert client.get("/healthz").json() == {"status": "ok"}
    docs = client.get("/docs").text
    assert all(route in docs for route in ("/v1/generate", "/v1/interpolate", "/v1/upscale", "/v1/model"))
    assert "cdn" not in docs.lower() and "<script" not in docs  # offline: nothing loaded from elsewhere
    page = client.get("/").text
    assert "facegan studio" in page and "src=\"http" not in page and "href=\"http" not in page
    assert client.get("/nope").status_code == 404


def test_metrics_count_requests_by_route_and_status(model):
    with TestClient(create_app(model)) as c:
        for body in (dict(seed=1, n=3), dict(seed=1, n=3), dict(seed=-1)):
            gen(c, **body)
        c.get("/nothing-here")
        text = c.get("/metrics").text
    assert 'facegan_requests_total{method="POST",route="/v1/generate",status="200"} 2' in text
    assert 'facegan_requests_total{method="POST",route="/v1/generate",status="422"} 1' in text
    assert 'facegan_requests_total{method="GET",route="unmatched",status="404"} 1' in text
    assert 'facegan_request_duration_seconds_count{route="/v1/generate"} 3' in text
    assert "facegan_faces_total 6" in text and "facegan_queue_faces 0" in text
    assert "# TYPE facegan_batch_faces histogram" in text


def test_one_log_line_per_request(client, caplog):
    with caplog.at_level("INFO", logger="facegan.serve"):
        gen(client, seed=1)
        gen(client, seed=-1)
    lines = [r.getMessage() for r in caplog.records if r.name == "facegan.serve"]
    assert len(lines) == 2 and lines[0].startswith("POST /v1/generate 200 ") and lines[1].startswith("POST /v1/generate 422 ")
    assert lines[0].endswith(" ms")


# -- security ---------------------------------------------------------------------------------------------------

def test_api_key_is_needed_everywhere_but_healthz(model):
    with TestClient(create_app(model, api_key="s3cret")) as c:
        assert c.get("/healthz").status_code == 200
        for path in ("/", "/docs", "/metrics", "/v1/model", "/openapi.json"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic"), path
        assert gen(c, seed=1).status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        basic = base64.b64encode(b"anyone:s3cret").decode()
        assert c.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        assert c.get("/", headers={"Authorization": "Basic !!notbase64"}).status_code == 401


def test_no_cors_unless_asked(model):
    origin = {"Origin": "https://example.org"}
    with TestClient(create_app(model)) as c:
        assert "access-control-allow-origin" not in c.get("/v1/model", headers=origin).headers
    with TestClient(create_app(model, cors_origins=("https://example.org",))) as c:
        assert c.get("/v1/model", headers=origin).headers["access-control-allow-origin"] == "https://example.org"


def test_binding_to_all_interfaces_warns():
    assert exposure_warning("127.0.0.1", None) is None
    assert "all interfaces" in exposure_warning("0.0.0.0", None) and "--api-key" in exposure_warning("0.0.0.0", None)
    assert "--api-key" not in exposure_warning("0.0.0.0", "k")


# -- micro-batching and the bounded queue ------------------------------------------------------------------------

def test_batcher_merges_concurrent_jobs_and_splits_big_ones():
    sizes, shapes = [], []

    def echo(z):
        shapes.append(len(z))
        return z.numpy().copy()

    b = Batcher(echo, max_batch=48, max_wait_s=0.2, max_queue=512, on_batch=sizes.append)
    try:
        assert b.sizes() == [1, 2, 4, 8, 16, 24, 32, 40, 48]
        zs = [torch.randn(n, 3) for n in (8, 8, 8, 3)]
        futures = [b.submit(z) for z in zs]
        outs = [f.result(5) for f in futures]
        assert sizes == [27] and shapes == [32] and all(np.array_equal(o, z.numpy()) for o, z in zip(outs, zs))
        big = torch.randn(100, 3)
        assert np.array_equal(b.submit(big).result(5), big.numpy())
        assert sizes[1:] == [48, 48, 4] and shapes[1:] == [48, 48, 4]  # padded to a known shape, never beyond max_batch
    finally:
        b.close()
    assert not b.alive
    with pytest.raises(QueueFull):
        b.submit(torch.zeros(1, 3))


def test_a_lone_request_waits_at_most_max_wait():
    b = Batcher(lambda z: z.numpy(), max_batch=64, max_wait_s=0.05, max_queue=64)
    try:
        t = time.perf_counter()
        b.submit(torch.zeros(1, 2)).result(5)
        assert time.perf_counter() - t < 1.0
    finally:
        b.close()


def test_a_full_queue_answers_503_with_retry_after_and_recovers():
    gate = threading.Event()
    base = _model(upscaler=False)

    def held(z):
        gate.wait(10)
        return render(base.G, z, len(z))

    m = replace(base, render=held)
    gate.set()  # open for the start-up warm-up
    with TestClient(create_app(m, Limits(max_n=64, max_frames=64, max_queue=64, max_wait_ms=0))) as c, ThreadPoolExecutor(2) as pool:
        gate.clear()
        first = pool.submit(gen, c, seed=1, n=64)  # taken by the worker, which then waits on the gate
        time.sleep(0.3)
        second = pool.submit(gen, c, seed=2, n=64)  # fills the queue
        time.sleep(0.3)
        r = gen(c, seed=3, n=1)
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]
        assert "facegan_queue_faces 64" in c.get("/metrics").text
        gate.set()
        assert first.result(10).status_code == 200 and second.result(10).status_code == 200
        assert gen(c, seed=3, n=1).status_code == 200


def test_a_failing_forward_pass_is_a_500_and_the_server_stays_up():
    armed = []
    base = _model(upscaler=False)

    def flaky(z):
        if armed and armed.pop():
            raise RuntimeError("boom")
        return render(base.G, z, len(z))

    with TestClient(create_app(replace(base, render=flaky)), raise_server_exceptions=False) as c:
        armed.append(True)  # the next forward pass fails (not the start-up warm-up)
        r = gen(c, seed=1)
        assert r.status_code == 500 and "RuntimeError" in r.json()["error"]
        assert gen(c, seed=1).status_code == 200 and c.get("/healthz").status_code == 200


def test_limits_that_make_no_sense_are_refused_before_loading():
    from facegan.errors import FaceganError

    with pytest.raises(FaceganError, match="--max-queue"):
        Limits(max_n=64, max_queue=10).check()
    with pytest.raises(FaceganError, match="--max-batch"):
        Limits(max_batch=0).check()


# -- loading what is served: runs, model folders, ONNX -------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained tiny run and its model folder (with model.onnx)."""
    import os

    from facegan import export
    from facegan.config import TrainConfig
    from facegan.train.loop import train

    tmp = tmp_path_factory.mktemp("served")
    old = os.environ.get("FACEGAN_CACHE")
    os.environ["FACEGAN_CACHE"] = str(tmp / "cache")
    try:
        cfg = TrainConfig(preset="tiny", data="procedural:64", out=str(tmp / "run"), batch=16, max_images=64, log_every=2,
                          sample_every=4, ckpt_every=4, grid=4, model=TINY, ema_kimg=0.05, eval_every=0)
        train(cfg, progress=False)
    finally:
        os.environ.pop("FACEGAN_CACHE") if old is None else os.environ.__setitem__("FACEGAN_CACHE", old)
    pytest.importorskip("onnxscript")
    return tmp / "run", export.export(tmp / "run", tmp / "model", onnx=True)


@pytest.mark.slow
def test_a_run_and_its_model_folder_are_the_same_model(exported):
    run, folder = exported
    a, b = load_model(run), load_model(folder)
    assert a.sha256 == b.sha256 and a.info["images"] == b.info["images"] == 64 and "licence" in b.card and "licence" in a.card
    z = torch.randn(5, TINY.z_dim)
    assert np.array_equal(a.render(z), b.render(z))


@pytest.mark.slow
def test_onnx_runtime_serves_the_same_faces_within_one_level(exported):
    pytest.importorskip("onnxruntime")
    _, folder = exported
    torch_m, onnx_m = load_model(folder), load_model(folder, runtime="onnx")
    assert onnx_m.runtime == "onnx" and onnx_m.sha256 == torch_m.sha256
    with TestClient(create_app(torch_m)) as a, TestClient(create_app(onnx_m)) as b:
        fa, fb = (c.post("/v1/generate", json=dict(seed=3, n=64)).json()["faces"] for c in (a, b))
        single = b.post("/v1/generate", json=dict(seed=3, start=40, n=1)).json()["faces"][0]["image"]
    diff = max(int(np.abs(_png(x["image"]).astype(int) - _png(y["image"])).max()) for x, y in zip(fa, fb))
    assert diff <= 1
    assert single == fb[40]["image"]  # ONNX Runtime too: a face's bytes do not depend on its batch
    run, _ = exported
    import tempfile
    from pathlib import Path

    temps = lambda: set(Path(tempfile.gettempdir()).glob("facegan-serve-*"))  # noqa: E731
    before = temps()
    from_run = load_model(run, runtime="onnx")  # a run has no model.onnx: exported to a temporary folder, removed on close
    made = temps() - before
    z = torch.randn(3, TINY.z_dim)
    assert np.abs(from_run.render(z).astype(int) - torch_m.render(z)).max() <= 1
    from_run.close()
    assert len(made) == 1 and not any(p.exists() for p in made)


@pytest.mark.slow
def test_serve_cli_help_names_every_route_and_bad_options_are_one_line():
    out = facegan_in_process("serve", "--help")
    assert out.returncode == 0
    for route in ("/v1/generate", "/v1/interpolate", "/v1/upscale", "/v1/model", "/healthz", "/metrics", "/docs"):
        assert route in out.stdout
    bad = facegan_in_process("serve", "no/such/run", "--max-queue", "8")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--max-queue" in bad.stderr
    missing = facegan_in_process("serve", "no/such/run", "--port", "0")
    assert missing.returncode == 2 and missing.stderr.startswith("error:") and missing.stderr.count("\n") == 1


def test_a_port_in_use_is_one_line():
    from facegan.errors import FaceganError

    sock = bind("127.0.0.1", 0)
    try:
        with pytest.raises(FaceganError, match="in use"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def test_upscale_jobs_beyond_the_limit_get_503_before_their_upload_is_read(monkeypatch):
    import facegan.serve.app as serve_app

    gate, real = threading.Event(), serve_app.upscale_image
    monkeypatch.setattr(serve_app, "upscale_image", lambda G, img: (gate.wait(10), real(G, img))[1])
    with TestClient(create_app(_model(), Limits(max_upscales=1))) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(c.post, "/v1/upscale", content=_photo(8, 8))
        time.sleep(0.3)
        r = c.post("/v1/upscale", content=_photo(8, 8))
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "upscale" in r.json()["error"]
        assert "facegan_upscales_in_flight 1" in c.get("/metrics").text
        gate.set()
        assert first.result(10).status_code == 200 and c.post("/v1/upscale", content=_photo(8, 8)).status_code == 200
