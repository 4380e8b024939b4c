"""Full-reference pixel metrics for upscaling: PSNR and SSIM against the true high-resolution image.

Both work on 8-bit RGB (or gray) images exactly as saved, over all channels — not on the
luma channel some SR papers use — so the numbers describe the files a user gets. SSIM is Wang
et al. (2004): 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, data range 255, computed
per channel over the "valid" region (no padding) and averaged, like scikit-image's
``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from facegan.data.loader import to_model_input
from facegan.models.dcgan import to_uint8
from facegan.models.srresnet import SRGenerator, bicubic, downscale

if TYPE_CHECKING:
    from facegan.metrics import MetricInput


def _float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) → float64 (N, C, H, W) in 0..255 (float64: PSNR of near-identical images)."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if x.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) images, got shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).to(torch.float64)


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-image PSNR in dB of uint8 batches ``a`` vs ``b`` (inf where identical)."""
    return psnr_db(_float(a), _float(b), 255.0).numpy()


def psnr_db(x: torch.Tensor, y: torch.Tensor, peak: float, floor: float = 0.0) -> torch.Tensor:
    """Per-image PSNR in dB of (N, …) tensors whose values span ``peak``, where they are (the training
    step logs it on the device, with no host sync); the mean squared error floored at ``floor``."""
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / (mse.clamp_min(floor) if floor else mse))


def compute_psnr(inp: MetricInput) -> dict[str, float]:
    return {"psnr": float(psnr(*inp.pairs).mean())}


def compute_ssim(inp: MetricInput) -> dict[str, float]:
    return {"ssim": float(ssim(*inp.pairs).mean())}


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma**2))
    return (g / g.sum()).float()


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-image mean SSIM of uint8 batches ``a`` vs ``b`` (1.0 where identical).

    The Gaussian window is applied as two 1-D passes in float32 (fast convolution kernels; float64
    ones are a slow fallback on CPU): within 1e-5 of a float64 reference.
    """
    x, y = _float(a).float(), _float(b).float()
    n, c, h, w = x.shape
    if min(h, w) < 11:
        raise ValueError(f"SSIM needs images of at least 11×11 pixels, got {h}×{w}")
    g = _gaussian_taps()
    gx, gy = g.view(1, 1, 1, 11).expand(c, 1, 1, 11), g.view(1, 1, 11, 1).expand(c, 1, 11, 1)
    blur = lambda t: F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).double().numpy()


def detail_energy(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-image mean squared 3×3 Laplacian of the gray image: how much fine detail (edges, texture)
    it holds. Blur lowers it, noise and ringing raise it; compared with the truth's, it tells a
    sharper upscaler from a smoother one where PSNR, which rewards the blurry mean, cannot."""
    x = _float(images).float().mean(1, keepdim=True)
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    return F.conv2d(x, k).pow(2).flatten(1).mean(1).double().numpy()


@torch.no_grad()
def upscale_held(G: SRGenerator, hr: np.ndarray, scale: int, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean 8-bit input, bicubic, ours) for held-out uint8 images: the standard SR protocol, what
    PSNR/SSIM are measured on during training (train-sr) and after it (upscale.evaluate_heldout)."""
    lr_u8 = to_uint8(downscale(to_model_input(torch.from_numpy(hr).to(device)), scale))
    return lr_u8, to_uint8(bicubic(to_model_input(torch.from_numpy(lr_u8).to(device)), scale)), G.upscale(lr_u8)
