"""Generative ops: the Gaussian latent of a variational autoencoder."""

import torch
from pydantic import Field
from torch import nn

from engine.errors import SpecError
from engine.registry import OpParams, make, register


class GaussianLatent(nn.Module):
    """A VAE's latent code: a mean and a log-variance head over a flat vector. While training it returns a sample,
    mean + exp(log_var / 2) * noise (the reparameterization trick, so gradients flow through the sample); in eval
    mode, the mean. Each call keeps the batch's KL divergence from the standard normal prior, per row, in `kl`,
    and the heads' outputs in `mean_out` and `log_var_out`."""

    def __init__(self, features: int, units: int):
        super().__init__()
        self.mean = nn.Linear(features, units)
        self.log_var = nn.Linear(features, units)
        self.kl = self.mean_out = self.log_var_out = None

    def forward(self, x):
        mean, log_var = self.mean(x), self.log_var(x).clamp(-12.0, 12.0)
        self.kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(1)
        self.mean_out, self.log_var_out = mean, log_var
        if self.training:
            return mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        return mean


class GaussianLatentParams(OpParams):
    units: int = Field(
        2,
        ge=1,
        le=1024,
        title="Latent size",
        description="How many numbers the code has. 2 draws the latent map directly; 8-32 reconstructs better.",
    )


@register(
    "gaussian_latent",
    family="generative",
    title="Gaussian latent (VAE)",
    params=GaussianLatentParams,
    doc="The end of a VAE's encoder: a mean and a log-variance per latent number, and a sample from them while "
    "training (the mean when evaluating). The layers after it are the decoder. Train it as a VAE: the loss adds "
    "the KL term that pulls the codes toward a standard normal, so samples of N(0, 1) decode into new data.",
)
def build_gaussian_latent(p: GaussianLatentParams, shapes):
    (shape,) = shapes
    if len(shape) != 1:
        raise SpecError(
            None,
            f"a Gaussian latent needs a flat vector of features but got shape {tuple(shape)}: "
            "add a Flatten (and a Dense) layer before it.",
        )
    return make(GaussianLatent, shape[0], p.units)
