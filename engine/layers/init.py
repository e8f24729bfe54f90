"""Weight initialization, a per-layer choice for layers with weights (the beginner guides' cure for vanishing or
exploding activations). `initialize` works in place and is recorded in the layer's source, so `model.py` makes
the same layer (it ships this function)."""

from typing import Literal

from pydantic import Field
from torch import nn

Init = Literal[
    "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"
]
INIT_FIELD = Field(
    "default",
    title="Weight initialization",
    description="How the weights start. default: PyTorch's (Kaiming uniform, scaled for the layer). "
    "Xavier/Glorot suits tanh and sigmoid; Kaiming/He suits ReLU; orthogonal keeps deep "
    "stacks stable. Other than default, biases start at zero.",
)


def initialize(module: nn.Module, scheme: str) -> nn.Module:
    """`module` with its weight drawn by `scheme` and its bias zeroed ("default" leaves PyTorch's as they are)."""
    if scheme == "default":
        return module
    weight = module.weight
    if scheme == "xavier_uniform":
        nn.init.xavier_uniform_(weight)
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(weight)
    elif scheme == "kaiming_uniform":
        nn.init.kaiming_uniform_(weight, nonlinearity="relu")
    elif scheme == "kaiming_normal":
        nn.init.kaiming_normal_(weight, nonlinearity="relu")
    elif scheme == "orthogonal":
        nn.init.orthogonal_(weight)
    else:
        raise ValueError(f"unknown initialization {scheme!r}")
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def initialized(module: nn.Module, scheme: str) -> nn.Module:
    """`initialize`, remembered in the module's source (engine.registry.make) for model.py."""
    initialize(module, scheme)
    if scheme != "default":
        module.source = f"initialize({module.source}, {scheme!r})"
    return module
