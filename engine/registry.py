"""The layer catalogue: op name -> typed params (pydantic) + a build function.

A build function receives the validated params and the *input shapes* (without the batch
dimension) and returns an nn.Module, so nobody ever types `in_features`. The Build page renders
each op's form from `params.model_json_schema()`.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict
from torch import nn

Shape = tuple[int, ...]


class OpParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Op:
    name: str
    family: str
    title: str
    doc: str
    params: type[OpParams]
    build: Callable[[OpParams, list[Shape]], nn.Module]
    min_inputs: int = 1
    max_inputs: int = 1


FAMILIES = (
    "core",
    "activation",
    "convolution",
    "pooling",
    "recurrent",
    "attention",
    "merge",
    "normalization",
    "regularization",
    "reshape",
    "generative",
)

FAMILY_COLORS = {  # the Build page's canvas and outline, and the exported diagram
    "core": "#4F46E5",
    "activation": "#F97316",
    "convolution": "#0EA5E9",
    "pooling": "#06B6D4",
    "recurrent": "#10B981",
    "attention": "#A855F7",
    "merge": "#EC4899",
    "normalization": "#64748B",
    "regularization": "#84CC16",
    "reshape": "#EAB308",
    "generative": "#DC2626",
}

_REGISTRY: dict[str, Op] = {}


def register(
    name: str,
    *,
    family: str,
    title: str,
    doc: str,
    params: type[OpParams] = OpParams,
    min_inputs: int = 1,
    max_inputs: int = 1,
):
    def wrap(build):
        _REGISTRY[name] = Op(name, family, title, doc, params, build, min_inputs, max_inputs)
        return build

    return wrap


def _code(value) -> str:
    """Python source that makes `value` again: a module made by `make`, a class, or a literal."""
    if isinstance(value, nn.Module):
        return value.source
    if inspect.isclass(value):
        return f"nn.{value.__name__}" if value.__module__.startswith("torch.nn") else value.__name__
    return repr(value)


def make(cls: type[nn.Module], *args, **kwargs) -> nn.Module:
    """`cls(*args, **kwargs)`, remembering the call as source code (`module.source`), so a built model can be
    written out as plain PyTorch (engine.codegen). Build functions construct their modules through this."""
    module = cls(*args, **kwargs)
    module.source = f"{_code(cls)}({', '.join([*map(_code, args), *(f'{k}={_code(v)}' for k, v in kwargs.items())])})"
    return module


def ops() -> dict[str, Op]:
    return dict(_REGISTRY)


def get_op(name: str) -> Op | None:
    return _REGISTRY.get(name)


from engine import layers  # noqa: E402,F401  (registers the built-in ops)
