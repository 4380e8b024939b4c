"""GAN losses, discriminator targets and the R1 penalty.

D emits raw scores (logits) and every loss here works on them, in fp32 even under autocast.

- ``bce``: the classic non-saturating loss (Goodfellow et al.; Radford et al.) via
  ``binary_cross_entropy_with_logits``, finite where sigmoid-then-BCE overflows;
- ``hinge``: D is only pushed until real scores pass +1 and fake ones −1 (SNGAN, BigGAN), which
  stops D from spending capacity on images it already separates;
- ``ls``: least squares towards the targets (LSGAN, Mao et al.): gradients that do not vanish
  for fakes far on the "real" side, and the best published DCGAN-class CelebA-64 FID.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facegan.config import LOSSES


def d_targets(
    batch: int, gen: torch.Generator, device: torch.device, smoothing: float = 0.0, noise: float = 0.0, flip: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for D's real and fake scores with optional smoothing, noise and flipping.

    Smoothing and noise keep D from becoming over-confident on small datasets; flipping a few
    labels (the "noisy, flipped labels" trick of the 128² face projects) injects the same kind
    of doubt. With all three at 0 this is exactly ones / zeros and consumes no random numbers,
    so the classic recipe's random stream is untouched. Used by ``bce`` and ``ls``.
    """
    real = torch.full((batch,), 1.0 - smoothing, device=device)
    fake = torch.zeros(batch, device=device)
    if noise > 0:
        real = real - noise * torch.rand(batch, generator=gen, device=device)
        fake = fake + noise * torch.rand(batch, generator=gen, device=device)
    if flip > 0:
        swap = torch.rand(batch, generator=gen, device=device) < flip
        real, fake = torch.where(swap, fake, real), torch.where(swap, real, fake)
    return real, fake


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_t: torch.Tensor, fake_t: torch.Tensor,
           kind: str = "bce") -> torch.Tensor:
    """D's loss: real scores towards real_t / "real", fake scores towards fake_t / "fake".

    Scores are (B,) or, from a D with several outputs per image (the projected D's logit maps),
    (B, L): each image's target then applies to all its L scores, and the loss is their mean.
    """
    r, f = real_logits.float(), fake_logits.float()
    real_t, fake_t = _per_score(real_t, r), _per_score(fake_t, f)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(r, real_t) + F.binary_cross_entropy_with_logits(f, fake_t)
    if kind == "hinge":
        return F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()
    if kind == "ls":
        return 0.5 * ((r - real_t) ** 2).mean() + 0.5 * ((f - fake_t) ** 2).mean()
    raise ValueError(f"unknown loss {kind!r}; choose from {', '.join(LOSSES)}")


def _per_score(targets: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(B,) targets broadcast to (B, L) scores; targets already of the scores' shape stay as they are."""
    if targets.dim() == 1 and scores.dim() > 1:
        return targets.reshape(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    return targets


def g_loss(fake_logits: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """G's loss on D's scores of its fakes (non-saturating for bce)."""
    f = fake_logits.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(f, torch.ones_like(f))  # −log D(G(z))
    if kind == "hinge":
        return -f.mean()
    if kind == "ls":
        return 0.5 * ((f - 1.0) ** 2).mean()
    raise ValueError(f"unknown loss {kind!r}; choose from {', '.join(LOSSES)}")


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ‖∇ₓ D(x)‖² at real images (Mescheder et al. 2018).

    Penalising D's gradient on the data manifold keeps it from growing steep cliffs at real
    images, the instability behind late-training collapse. ``real`` must require grad and
    ``real_logits`` must have been computed from it. A D with several scores per image (B, L) is
    penalised on their mean, so γ means the same for either D.
    """
    per_image = real_logits.float().reshape(len(real_logits), -1).mean(1)  # one score per image, whatever D emits
    (grad,) = torch.autograd.grad(per_image.sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()
