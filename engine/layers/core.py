"""Core ops: linear, activation, dropout, batchnorm, flatten."""

import math
from typing import Literal

from pydantic import Field
from torch import nn

from engine.errors import SpecError
from engine.layers.init import INIT_FIELD, Init, initialized
from engine.registry import OpParams, make, register


class LinearParams(OpParams):
    out_features: int = Field(
        64,
        ge=1,
        le=65536,
        title="Units",
        description="How many outputs (neurons) this layer has. Hidden layers: 16-512; "
        "the last layer: one per class, or 1 for regression.",
    )
    bias: bool = Field(
        True, title="Bias", description="Add a learned offset to each output. Usually on."
    )
    init: Init = INIT_FIELD


@register(
    "linear",
    family="core",
    title="Dense (linear)",
    params=LinearParams,
    doc="Fully connected layer: every output is a weighted sum of all inputs. The workhorse of MLPs.",
)
def build_linear(p: LinearParams, shapes):
    (shape,) = shapes
    if len(shape) > 2:
        raise SpecError(
            None,
            f"Dense needs a flat vector of features but got shape {tuple(shape)}: "
            "add a Flatten layer before it.",
        )
    return initialized(make(nn.Linear, shape[-1], p.out_features, bias=p.bias), p.init)


ACTIVATIONS = {
    "relu": lambda p: make(nn.ReLU),
    "prelu": lambda p: make(nn.PReLU),
    "selu": lambda p: make(nn.SELU),
    "silu": lambda p: make(nn.SiLU),
    "mish": lambda p: make(nn.Mish),
    "softplus": lambda p: make(nn.Softplus),
    "log_softmax": lambda p: make(nn.LogSoftmax, dim=1),
    "leaky_relu": lambda p: make(nn.LeakyReLU, p.negative_slope),
    "sigmoid": lambda p: make(nn.Sigmoid),
    "tanh": lambda p: make(nn.Tanh),
    "gelu": lambda p: make(nn.GELU),
    "elu": lambda p: make(nn.ELU),
    "softmax": lambda p: make(nn.Softmax, dim=1),
}


class ActivationParams(OpParams):
    kind: Literal[
        "relu",
        "leaky_relu",
        "sigmoid",
        "tanh",
        "gelu",
        "elu",
        "softmax",
        "prelu",
        "selu",
        "silu",
        "mish",
        "softplus",
        "log_softmax",
    ] = Field(
        "relu",
        title="Function",
        description="The non-linearity. relu is the usual default; tanh/sigmoid squash to a range; softmax "
        "turns outputs into probabilities (not needed before cross-entropy, which applies it); "
        "prelu learns its negative slope; silu/mish/gelu are smooth relu variants.",
    )
    negative_slope: float = Field(
        0.01,
        ge=0,
        le=1,
        title="Negative slope",
        description="leaky_relu only: the slope for negative inputs (usually 0.01).",
    )


@register(
    "activation",
    family="activation",
    title="Activation",
    params=ActivationParams,
    doc="Applies a non-linear function element-wise. Put one after each hidden Dense layer.",
)
def build_activation(p: ActivationParams, shapes):
    return ACTIVATIONS[p.kind](p)


class DropoutParams(OpParams):
    p: float = Field(
        0.5,
        ge=0,
        lt=1,
        title="Drop probability",
        description="Fraction of values zeroed during training to fight overfitting. 0.1-0.5 is usual.",
    )


@register(
    "dropout",
    family="regularization",
    title="Dropout",
    params=DropoutParams,
    doc="Randomly zeroes values while training (never at evaluation) so the model cannot rely on any one.",
)
def build_dropout(p: DropoutParams, shapes):
    return make(nn.Dropout, p.p)


class BatchNormParams(OpParams):
    momentum: float = Field(
        0.1,
        gt=0,
        le=1,
        title="Momentum",
        description="How fast the running mean and variance follow each batch. 0.1 is usual.",
    )
    eps: float = Field(
        1e-5, gt=0, le=0.1, title="Epsilon", description="Added to the variance for stability."
    )


@register(
    "batchnorm",
    family="normalization",
    title="Batch norm",
    params=BatchNormParams,
    doc="Normalizes each feature over the batch, which often lets you train faster and deeper.",
)
def build_batchnorm(p: BatchNormParams, shapes):
    (shape,) = shapes
    if len(shape) in (1, 2):
        return make(nn.BatchNorm1d, shape[0], eps=p.eps, momentum=p.momentum)
    if len(shape) == 3:
        return make(nn.BatchNorm2d, shape[0], eps=p.eps, momentum=p.momentum)
    raise SpecError(
        None,
        f"batch norm works on (features,), (channels, length) or (channels, height, width) "
        f"input but got {tuple(shape)}: add a flatten before it.",
    )


@register(
    "flatten",
    family="reshape",
    title="Flatten",
    doc="Turns an image or sequence into one long feature vector, e.g. before Dense layers.",
)
def build_flatten(p: OpParams, shapes):
    return make(nn.Flatten)


@register(
    "dropout2d",
    family="regularization",
    title="Dropout 2D",
    params=DropoutParams,
    doc="Zeroes whole channels of an image while training; the dropout to use between conv layers.",
)
def build_dropout2d(p: DropoutParams, shapes):
    (shape,) = shapes
    if len(shape) != 3:
        raise SpecError(
            None,
            f"Dropout 2D works on (channels, height, width) input but got {tuple(shape)}: "
            "use Dropout instead.",
        )
    return make(nn.Dropout2d, p.p)


class LayerNormParams(OpParams):
    eps: float = Field(
        1e-5, gt=0, le=0.1, title="Epsilon", description="Added to the variance for stability."
    )


@register(
    "layernorm",
    family="normalization",
    title="Layer norm",
    params=LayerNormParams,
    doc="Normalizes each sample's features (the last dimension). The norm of transformers and RNNs.",
)
def build_layernorm(p: LayerNormParams, shapes):
    (shape,) = shapes
    return make(nn.LayerNorm, shape[-1], eps=p.eps)


class GroupNormParams(OpParams):
    num_groups: int = Field(
        4,
        ge=1,
        le=1024,
        title="Groups",
        description="Channels are split into this many groups, each normalized on its own. "
        "Must divide the channel count; 8 or 32 is usual.",
    )
    eps: float = Field(
        1e-5, gt=0, le=0.1, title="Epsilon", description="Added to the variance for stability."
    )


@register(
    "groupnorm",
    family="normalization",
    title="Group norm",
    params=GroupNormParams,
    doc="Normalizes groups of channels per sample; works with small batches, unlike batch norm.",
)
def build_groupnorm(p: GroupNormParams, shapes):
    (shape,) = shapes
    if len(shape) < 2:
        raise SpecError(None, f"group norm needs (channels, ...) input but got {tuple(shape)}.")
    if shape[0] % p.num_groups:
        raise SpecError(
            None,
            f"{shape[0]} channels cannot be split into {p.num_groups} groups: choose a number "
            f"of groups that divides {shape[0]}.",
        )
    return make(nn.GroupNorm, p.num_groups, shape[0], eps=p.eps)


class Reshape(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class ReshapeParams(OpParams):
    shape: list[int] = Field(
        [1, -1],
        min_length=1,
        max_length=4,
        title="Shape",
        description="The new shape without the batch dimension, e.g. [1, 28, 28]; [1, -1] adds a channel. One entry "
        "may be -1 (inferred). The number of values must stay the same.",
    )


@register(
    "reshape",
    family="reshape",
    title="Reshape",
    params=ReshapeParams,
    doc="Rearranges the values into a new shape, e.g. a flat vector back into an image.",
)
def build_reshape(p: ReshapeParams, shapes):
    (shape,) = shapes
    size, known = math.prod(shape), math.prod(d for d in p.shape if d != -1)
    if p.shape.count(-1) > 1 or any(d == 0 or d < -1 for d in p.shape):
        raise SpecError(
            None, f"shape {p.shape} is not valid: use positive sizes and at most one -1."
        )
    if (-1 in p.shape and size % known) or (-1 not in p.shape and known != size):
        raise SpecError(
            None,
            f"cannot reshape {tuple(shape)} ({size} values) into {p.shape}: the new shape must "
            f"hold exactly {size} values.",
        )
    return make(Reshape, list(p.shape))


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = (0, *(d + 1 for d in dims))

    def forward(self, x):
        return x.permute(*self.dims)


class PermuteParams(OpParams):
    dims: list[int] = Field(
        [1, 0],
        min_length=1,
        max_length=4,
        title="Order",
        description="New order of the dimensions (without the batch), e.g. [1, 0] swaps "
        "(channels, length) into (length, channels).",
    )


@register(
    "permute",
    family="reshape",
    title="Permute",
    params=PermuteParams,
    doc="Reorders dimensions, e.g. to turn a conv's (channels, length) into an RNN's (time, features).",
)
def build_permute(p: PermuteParams, shapes):
    (shape,) = shapes
    if sorted(p.dims) != list(range(len(shape))):
        raise SpecError(
            None,
            f"order {p.dims} must list each of the dimensions 0..{len(shape) - 1} of input "
            f"{tuple(shape)} once.",
        )
    return make(Permute, list(p.dims))
