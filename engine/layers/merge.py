"""Merge ops: several inputs, one output. Name the inputs in the node's `inputs`."""

import torch
from pydantic import Field
from torch import nn

from engine.errors import SpecError
from engine.registry import OpParams, make, register


class Add(nn.Module):
    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


@register(
    "add",
    family="merge",
    title="Add (residual)",
    min_inputs=2,
    max_inputs=8,
    doc="Adds its inputs element-wise: the skip connection of residual networks. Shapes must match.",
)
def build_add(p, shapes):
    if any(tuple(s) != tuple(shapes[0]) for s in shapes):
        raise SpecError(
            None,
            f"add needs inputs of the same shape but got {', '.join(str(tuple(s)) for s in shapes)}: "
            "change the layers feeding it so their output shapes match (e.g. a Dense or 1x1 Conv "
            "on the skip path).",
        )
    return make(Add)


class ConcatParams(OpParams):
    dim: int = Field(
        -1,
        ge=-4,
        le=3,
        title="Axis",
        description="Which dimension (without the batch) to join along; -1 is the last (features). "
        "0 joins channels of images.",
    )


class Concat(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim if dim < 0 else dim + 1

    def forward(self, *xs):
        return torch.cat(xs, dim=self.dim)


@register(
    "concat",
    family="merge",
    title="Concatenate",
    params=ConcatParams,
    min_inputs=2,
    max_inputs=8,
    doc="Joins its inputs along one axis; the other dimensions must match.",
)
def build_concat(p: ConcatParams, shapes):
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes) or not -rank <= p.dim < rank:
        raise SpecError(
            None,
            f"cannot concatenate {', '.join(str(tuple(s)) for s in shapes)} along axis {p.dim}: "
            "inputs need the same number of dimensions and the axis must exist.",
        )
    axis = p.dim % rank
    for s in shapes:
        if any(a != b for i, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if i != axis):
            raise SpecError(
                None,
                f"cannot concatenate {', '.join(str(tuple(s)) for s in shapes)} along axis "
                f"{p.dim}: all other dimensions must match.",
            )
    return make(Concat, p.dim)
