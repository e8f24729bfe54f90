"""Core ops: linear, activation, dropout, batchnorm, flatten."""

from typing import Literal

from pydantic import Field
from torch import nn

from engine.errors import SpecError
from engine.registry import OpParams, register


class LinearParams(OpParams):
    out_features: int = Field(64, ge=1, le=65536, title="Units",
                              description="How many outputs (neurons) this layer has. Hidden layers: 16-512; "
                                          "the last layer: one per class, or 1 for regression.")
    bias: bool = Field(True, title="Bias", description="Add a learned offset to each output. Usually on.")


@register("linear", family="core", title="Dense (linear)", params=LinearParams,
          doc="Fully connected layer: every output is a weighted sum of all inputs. The workhorse of MLPs.")
def build_linear(p: LinearParams, shapes):
    (shape,) = shapes
    if len(shape) > 2:
        raise SpecError(None, f"Dense needs a flat vector of features but got shape {tuple(shape)}: "
                              "add a Flatten layer before it.")
    return nn.Linear(shape[-1], p.out_features, bias=p.bias)


ACTIVATIONS = {
    "relu": lambda p: nn.ReLU(),
    "leaky_relu": lambda p: nn.LeakyReLU(p.negative_slope),
    "sigmoid": lambda p: nn.Sigmoid(),
    "tanh": lambda p: nn.Tanh(),
    "gelu": lambda p: nn.GELU(),
    "elu": lambda p: nn.ELU(),
    "softmax": lambda p: nn.Softmax(dim=1),
}


class ActivationParams(OpParams):
    kind: Literal["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "elu", "softmax"] = Field(
        "relu", title="Function",
        description="The non-linearity. relu is the usual default; tanh/sigmoid squash to a range; softmax "
                    "turns outputs into probabilities (not needed before cross-entropy, which applies it).")
    negative_slope: float = Field(0.01, ge=0, le=1, title="Negative slope",
                                  description="leaky_relu only: the slope for negative inputs (usually 0.01).")


@register("activation", family="activation", title="Activation", params=ActivationParams,
          doc="Applies a non-linear function element-wise. Put one after each hidden Dense layer.")
def build_activation(p: ActivationParams, shapes):
    return ACTIVATIONS[p.kind](p)


class DropoutParams(OpParams):
    p: float = Field(0.5, ge=0, lt=1, title="Drop probability",
                     description="Fraction of values zeroed during training to fight overfitting. 0.1-0.5 is usual.")


@register("dropout", family="regularization", title="Dropout", params=DropoutParams,
          doc="Randomly zeroes values while training (never at evaluation) so the model cannot rely on any one.")
def build_dropout(p: DropoutParams, shapes):
    return nn.Dropout(p.p)


class BatchNormParams(OpParams):
    momentum: float = Field(0.1, gt=0, le=1, title="Momentum",
                            description="How fast the running mean and variance follow each batch. 0.1 is usual.")
    eps: float = Field(1e-5, gt=0, le=0.1, title="Epsilon", description="Added to the variance for stability.")


@register("batchnorm", family="normalization", title="Batch norm", params=BatchNormParams,
          doc="Normalizes each feature over the batch, which often lets you train faster and deeper.")
def build_batchnorm(p: BatchNormParams, shapes):
    (shape,) = shapes
    if len(shape) in (1, 2):
        return nn.BatchNorm1d(shape[0], eps=p.eps, momentum=p.momentum)
    if len(shape) == 3:
        return nn.BatchNorm2d(shape[0], eps=p.eps, momentum=p.momentum)
    raise SpecError(None, f"batch norm works on (features,), (channels, length) or (channels, height, width) "
                          f"input but got {tuple(shape)}: add a flatten before it.")


@register("flatten", family="reshape", title="Flatten",
          doc="Turns an image or sequence into one long feature vector, e.g. before Dense layers.")
def build_flatten(p: OpParams, shapes):
    return nn.Flatten()
