"""Convolution and pooling ops. Inputs are channels-first: (C, L) for 1-D, (C, H, W) for 2-D."""

from typing import Literal

from pydantic import Field
from torch import nn

from engine.errors import SpecError
from engine.layers.init import INIT_FIELD, Init, initialized
from engine.registry import OpParams, make, register


def _need(shape, rank: int, op: str):
    if len(shape) != rank:
        want = "(channels, length)" if rank == 2 else "(channels, height, width)"
        hint = (
            ("remove the Flatten before it or add a Reshape to " + want)
            if len(shape) == 1
            else "check the layers before it"
        )
        raise SpecError(None, f"{op} needs {want} input but got {tuple(shape)}: {hint}.")


class ConvParams(OpParams):
    out_channels: int = Field(
        16,
        ge=1,
        le=4096,
        title="Filters",
        description="How many feature maps (filters) the layer learns. 16-64 early, more deeper.",
    )
    kernel_size: int = Field(
        3, ge=1, le=31, title="Kernel size", description="Width of each filter; 3 is usual."
    )
    stride: int = Field(
        1,
        ge=1,
        le=16,
        title="Stride",
        description="Step between filter positions; 2 halves the size.",
    )
    padding: int | Literal["same", "valid"] = Field(
        "same",
        title="Padding",
        description="'same' keeps the size (stride 1), 'valid' adds none, or a number of "
        "zeros added on each side.",
    )
    dilation: int = Field(
        1,
        ge=1,
        le=16,
        title="Dilation",
        description="Spacing inside the filter; 1 is a plain conv.",
    )
    groups: int = Field(
        1,
        ge=1,
        le=4096,
        title="Groups",
        description="Split channels into independent groups (= channels: depthwise). Usually 1.",
    )
    bias: bool = Field(
        True, title="Bias", description="Add a learned offset per filter. Off before batch norm."
    )
    init: Init = INIT_FIELD


def _conv(kind, p: ConvParams, shapes, rank, op):
    (shape,) = shapes
    _need(shape, rank, op)
    if p.padding == "same" and p.stride != 1:
        raise SpecError(
            None,
            "padding 'same' only works with stride 1: set padding to a number (kernel_size // 2) "
            "or the stride to 1.",
        )
    if shape[0] % p.groups or p.out_channels % p.groups:
        raise SpecError(
            None,
            f"groups={p.groups} must divide both the input channels ({shape[0]}) and the "
            f"filters ({p.out_channels}).",
        )
    return initialized(
        make(
            kind,
            shape[0],
            p.out_channels,
            p.kernel_size,
            stride=p.stride,
            padding=p.padding,
            dilation=p.dilation,
            groups=p.groups,
            bias=p.bias,
        ),
        p.init,
    )


@register(
    "conv1d",
    family="convolution",
    title="Conv 1D",
    params=ConvParams,
    doc="Slides learned filters along a sequence or signal of shape (channels, length).",
)
def build_conv1d(p: ConvParams, shapes):
    return _conv(nn.Conv1d, p, shapes, 2, "Conv 1D")


@register(
    "conv2d",
    family="convolution",
    title="Conv 2D",
    params=ConvParams,
    doc="Slides learned filters over an image (channels, height, width): the core of CNNs.",
)
def build_conv2d(p: ConvParams, shapes):
    return _conv(nn.Conv2d, p, shapes, 3, "Conv 2D")


class ConvTransposeParams(OpParams):
    out_channels: int = Field(
        16, ge=1, le=4096, title="Filters", description="How many feature maps come out."
    )
    kernel_size: int = Field(
        2, ge=1, le=31, title="Kernel size", description="2 with stride 2 doubles the size."
    )
    stride: int = Field(
        2, ge=1, le=16, title="Stride", description="Upsampling factor; 2 doubles height and width."
    )
    padding: int = Field(
        0, ge=0, le=15, title="Padding", description="Trimmed from each side of the output."
    )
    init: Init = INIT_FIELD


@register(
    "conv_transpose2d",
    family="convolution",
    title="Conv transpose 2D",
    params=ConvTransposeParams,
    doc="A learned upsampling ('deconvolution'): grows an image, e.g. in decoders and autoencoders.",
)
def build_conv_transpose2d(p: ConvTransposeParams, shapes):
    (shape,) = shapes
    _need(shape, 3, "Conv transpose 2D")
    return initialized(
        make(
            nn.ConvTranspose2d,
            shape[0],
            p.out_channels,
            p.kernel_size,
            stride=p.stride,
            padding=p.padding,
        ),
        p.init,
    )


class PoolParams(OpParams):
    kernel_size: int = Field(
        2, ge=1, le=16, title="Window", description="Size of each pooling window; 2 is usual."
    )
    stride: int | None = Field(
        None,
        ge=1,
        le=16,
        title="Stride",
        description="Step between windows; empty = the window size (no overlap).",
    )


def _pool(kind, p: PoolParams, shapes, rank, op):
    (shape,) = shapes
    _need(shape, rank, op)
    if any(d < p.kernel_size for d in shape[1:]):
        raise SpecError(
            None,
            f"the window {p.kernel_size} is larger than the input {tuple(shape)}: use a smaller "
            "window or fewer pooling layers before it.",
        )
    return make(kind, p.kernel_size, stride=p.stride)


@register(
    "maxpool1d",
    family="pooling",
    title="Max pool 1D",
    params=PoolParams,
    doc="Keeps the largest value in each window along a sequence; shrinks the length.",
)
def build_maxpool1d(p, shapes):
    return _pool(nn.MaxPool1d, p, shapes, 2, "Max pool 1D")


@register(
    "maxpool2d",
    family="pooling",
    title="Max pool 2D",
    params=PoolParams,
    doc="Keeps the largest value in each window; halves height and width with window 2.",
)
def build_maxpool2d(p, shapes):
    return _pool(nn.MaxPool2d, p, shapes, 3, "Max pool 2D")


@register(
    "avgpool1d",
    family="pooling",
    title="Average pool 1D",
    params=PoolParams,
    doc="Averages each window along a sequence; shrinks the length.",
)
def build_avgpool1d(p, shapes):
    return _pool(nn.AvgPool1d, p, shapes, 2, "Average pool 1D")


@register(
    "avgpool2d",
    family="pooling",
    title="Average pool 2D",
    params=PoolParams,
    doc="Averages each window of an image; halves height and width with window 2.",
)
def build_avgpool2d(p, shapes):
    return _pool(nn.AvgPool2d, p, shapes, 3, "Average pool 2D")


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.flatten(2).mean(2)


@register(
    "global_avgpool",
    family="pooling",
    title="Global average pool",
    doc="Averages each channel over all positions: (C, H, W) or (C, L) becomes (C,). Replaces Flatten "
    "before the classifier in modern CNNs.",
)
def build_global_avgpool(p, shapes):
    (shape,) = shapes
    if len(shape) not in (2, 3):
        raise SpecError(
            None,
            f"global average pooling needs (channels, length) or (channels, height, width) input "
            f"but got {tuple(shape)}.",
        )
    return make(GlobalAvgPool)


class UpsampleParams(OpParams):
    scale_factor: int = Field(
        2, ge=1, le=16, title="Scale", description="Multiply the size by this; 2 is usual."
    )
    mode: Literal["nearest", "linear", "bilinear"] = Field(
        "nearest",
        title="Mode",
        description="How new values are filled: nearest copies; (bi)linear interpolates.",
    )


@register(
    "upsample",
    family="convolution",
    title="Upsample",
    params=UpsampleParams,
    doc="Grows a sequence or image by a fixed factor without learned weights.",
)
def build_upsample(p: UpsampleParams, shapes):
    (shape,) = shapes
    if len(shape) not in (2, 3):
        raise SpecError(
            None,
            f"upsampling needs (channels, length) or (channels, height, width) input but got "
            f"{tuple(shape)}.",
        )
    mode = p.mode
    if mode != "nearest":
        mode = "linear" if len(shape) == 2 else "bilinear"
    return make(nn.Upsample, scale_factor=p.scale_factor, mode=mode)
