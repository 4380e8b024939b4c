"""GAN losses and discriminator targets.

D emits logits and every loss here works on logits (``binary_cross_entropy_with_logits``), which
stays finite where sigmoid-then-BCE overflows. Losses are computed in fp32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_targets(
    batch: int, gen: torch.Generator, device: torch.device, smoothing: float = 0.0, noise: float = 0.0, flip: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for D's real and fake logits with optional smoothing, noise and flipping.

    Smoothing and noise keep D from becoming over-confident on small datasets; flipping a few
    labels (the "noisy, flipped labels" trick of the 128² face projects) injects the same kind
    of doubt. With all three at 0 this is exactly ones / zeros and consumes no random numbers,
    so the classic recipe's random stream is untouched.
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


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_t: torch.Tensor, fake_t: torch.Tensor) -> torch.Tensor:
    """Discriminator BCE: push real logits towards real_t and fake logits towards fake_t."""
    return F.binary_cross_entropy_with_logits(real_logits.float(), real_t) + F.binary_cross_entropy_with_logits(
        fake_logits.float(), fake_t
    )


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: −log D(G(z)), strong gradients even when D wins."""
    return F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits, dtype=torch.float32))
