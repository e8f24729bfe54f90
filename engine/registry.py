"""The layer catalogue: op name -> typed params (pydantic) + a build function.

A build function receives the validated params and the *input shapes* (without the batch
dimension) and returns an nn.Module, so nobody ever types `in_features`. The Build page renders
each op's form from `params.model_json_schema()`.
"""

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


FAMILIES = ("core", "activation", "convolution", "pooling", "recurrent", "attention", "merge", "normalization",
            "regularization", "reshape")

_REGISTRY: dict[str, Op] = {}


def register(name: str, *, family: str, title: str, doc: str, params: type[OpParams] = OpParams,
             min_inputs: int = 1, max_inputs: int = 1):
    def wrap(build):
        _REGISTRY[name] = Op(name, family, title, doc, params, build, min_inputs, max_inputs)
        return build
    return wrap


def ops() -> dict[str, Op]:
    return dict(_REGISTRY)


def get_op(name: str) -> Op | None:
    return _REGISTRY.get(name)


from engine import layers  # noqa: E402,F401  (registers the built-in ops)
