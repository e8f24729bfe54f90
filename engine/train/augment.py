"""Training-time augmentation, applied to each batch on the device (no per-image Python loop)."""

import math

import torch
import torch.nn.functional as F


def active(cfg) -> bool:
    return bool(cfg.flip or cfg.crop_padding or cfg.rotation or cfg.noise)


def augment(x: torch.Tensor, cfg, gen: torch.Generator | None = None) -> torch.Tensor:
    """x: a float batch. Flip, crop and rotation apply to images (N, C, H, W); noise to any input."""
    n = x.shape[0]
    rand = lambda *shape: torch.rand(*shape, device=x.device, generator=gen)  # noqa: E731
    if x.dim() == 4:
        if cfg.flip:
            x = torch.where(rand(n, 1, 1, 1) < 0.5, x.flip(-1), x)
        if cfg.crop_padding:
            p = int(cfg.crop_padding)
            h, w = x.shape[-2:]
            padded = F.pad(x, (p, p, p, p))
            dy = (rand(n) * (2 * p + 1)).long()
            dx = (rand(n) * (2 * p + 1)).long()
            x = _crop(padded, dy, dx, h, w)
        if cfg.rotation:
            angle = (rand(n) * 2 - 1) * math.radians(cfg.rotation)
            cos, sin = torch.cos(angle), torch.sin(angle)
            zero = torch.zeros_like(cos)
            theta = torch.stack(
                [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
            )
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    if cfg.noise:
        x = x + torch.randn(x.shape, device=x.device, generator=gen) * cfg.noise
    return x


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """An h×w window per image at its own offset, gathered in one indexing operation."""
    n = padded.shape[0]
    rows = dy[:, None] + torch.arange(h, device=padded.device)[None, :]  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=padded.device)[None, :]  # (n, w)
    batch = torch.arange(n, device=padded.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
