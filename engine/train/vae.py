"""A variational autoencoder's loss and validation, as plug-ins of the training core (`engine.train.core`).

Portable like the core: it imports torch and its neighbours only, so a bundle's train.py retrains a VAE with the same
loss. A VAE's Gaussian latent layers (engine/layers/generative.py, or their copy in a bundle's model.py) keep each
batch's KL divergence per row in `kl`.
"""

import math
from collections.abc import Callable

import torch

from .core import as_input
from .options import LOSSES


def latents(model) -> list:
    """The model's Gaussian latent layers (a VAE's code), found by their class's name: LayerLab's or model.py's."""
    return [m for m in model.modules() if type(m).__name__ == "GaussianLatent"]


def criterion(s) -> Callable:
    """A VAE's training loss: the reconstruction loss summed over a row's values, plus β times the KL divergence
    of its code from the prior (per row, both averaged over the batch). With a KL warm-up the weight rises from 0
    to β over the first `kl_warmup` epochs."""
    fn, cfg, codes = LOSSES[s.plan.loss].fn, s.cfg, latents(s.model)
    warm_steps = math.ceil(len(s.data[1]) / cfg.batch_size) * cfg.kl_warmup

    def loss(out, y):
        weight = cfg.beta * (min(1.0, s.step / warm_steps) if warm_steps else 1.0)
        kl = sum(m.kl.float().mean() for m in codes)
        return fn(out.float(), y, reduction="sum") / len(y) + weight * kl

    return loss


def validate(s) -> dict[str, float]:
    """A VAE on the validation split, each row coded by its mean: the reconstruction loss and the KL per row, and
    the loss at the full β (so epochs compare while the KL warms up)."""
    fn, net, x, batch = LOSSES[s.plan.loss].fn, s.net, s.data[2], s.plan.eval_batch
    codes, was_training = latents(s.model), net.training
    recon = kl = 0.0
    net.eval()
    with torch.no_grad(), s.autocast():
        for i in range(0, len(x), batch):
            xb = as_input(x[i : i + batch])
            recon += fn(net(xb).float(), xb, reduction="sum").item()
            kl += sum(m.kl.float().sum() for m in codes).item()
    net.train(was_training)
    n = max(len(x), 1)
    return {"loss": (recon + s.cfg.beta * kl) / n, "reconstruction": recon / n, "kl": kl / n}
