"""ModelSpec -> nn.Module, with shape inference on the meta device and a per-node summary."""

import functools
import json
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from engine.errors import SpecError
from engine.registry import get_op
from engine.spec import NO_INPUT, InputSpec, ModelSpec, input_ref, parse_spec
from engine.train.options import OPTIMIZERS


@dataclass(frozen=True)
class NodeInfo:
    id: str
    op: str
    inputs: list[str]
    output_shape: tuple[int, ...]
    params: int
    macs: int = 0  # multiply-adds per sample


class GraphModel(nn.Module):
    """Runs the nodes in order; each node's module lives at `layers.<node id>`.

    It takes one tensor per input (`model(features, review)`), or, for several inputs, one packed tensor with
    each row's parts flattened side by side in the order of `spec.inputs` (how LayerLab stores such rows)."""

    def __init__(self, spec: ModelSpec, modules: dict[str, nn.Module]):
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleDict(modules)
        inputs = spec.input_ids()
        self._output = spec.output_id()
        refs = spec.input_refs()
        # (how nodes name it, its shape) per input; shapes are filled once compiled against data
        self.layout = [(refs[name], tuple(i.shape or ())) for name, i in spec.inputs.items()]
        needed, stack = set(), [self._output]  # only the output's ancestors run
        while stack:
            nid = stack.pop()
            if nid in inputs and nid not in needed:
                needed.add(nid)
                stack.extend(inputs[nid])
        self.plan = [(n.id, tuple(inputs[n.id])) for n in spec.execution_order() if n.id in needed]
        prev = "input"
        chain = True
        for nid, ins in self.plan:
            chain &= ins == (prev,)
            prev = nid
        # A plain stack skips the dict of intermediate values: one less lookup per layer.
        self.chain = chain and self._output == self.plan[-1][0] and len(self.layout) == 1
        self._seq = [self.layers[nid] for nid, _ in self.plan]

    @property
    def takes_tokens(self) -> bool:
        """Whether the one input is token ids (integers): its first layer is an Embedding."""
        return (
            len(self.layout) == 1
            and bool(self.plan)
            and isinstance(self.layers[self.plan[0][0]], nn.Embedding)
        )

    def unpack(self, x):
        """One packed tensor (N, total width) as one tensor per input, each in its own shape (views, no copies)."""
        parts, at = [], 0
        for _, shape in self.layout:
            width = math.prod(shape)
            parts.append(x[:, at : at + width].reshape(-1, *shape))
            at += width
        return parts

    def with_output(self, node_id: str) -> "GraphModel":
        """The same modules (shared weights) with another node as the output, e.g. the logits before a softmax."""
        spec = self.spec.model_copy(deep=True)
        spec.output = node_id
        return GraphModel(spec, dict(self.layers.items()))

    def forward(self, *xs):
        if self.chain:
            (x,) = xs
            for m in self._seq:
                x = m(x)
            return x
        if len(xs) == 1 and len(self.layout) > 1:
            xs = self.unpack(xs[0])
        values = {ref: x for (ref, _), x in zip(self.layout, xs, strict=True)}
        for nid, ins in self.plan:
            values[nid] = self.layers[nid](*[values[i] for i in ins])
        return values[self._output]


def _resolve_inputs(spec: ModelSpec, data) -> ModelSpec:
    """The spec with every input's shape (and token flag) filled from `data`: None (the spec's own shapes), one
    shape (data with one part) or {name: shape or {"shape", "tokens"}} (data with named parts). With named parts,
    the inputs follow the data's order (how its rows are packed), and data parts the model does not read are
    listed too; nodes that read an input name it explicitly when the first input changes."""
    if data is not None and not isinstance(data, dict):
        if len(spec.inputs) > 1:
            raise SpecError(
                None,
                f"the model has {len(spec.inputs)} inputs ({', '.join(spec.inputs)}) but the data "
                "has one: choose a table with text and other columns, or a one-input model.",
            )
        data = {spec.first_input: data}
    data = {k: v if isinstance(v, dict) else {"shape": v} for k, v in (data or {}).items()}
    missing = [n for n in spec.inputs if data and n not in data]
    if missing:
        raise SpecError(
            None,
            f"the model reads the input(s) {', '.join(missing)}, which the data does not have "
            f"(its parts: {', '.join(data)}). Rename the model's inputs to match.",
        )
    filled: dict[str, InputSpec] = {}
    for name in data or spec.inputs:
        own = spec.inputs.get(name, InputSpec())
        given = data.get(name, {}).get("shape") if data else None
        shape = own.shape if own.shape is not None else given
        if shape is None:
            raise SpecError(
                None,
                f"the shape of the input '{name}' is unknown: choose a dataset or set its shape in "
                "the spec.",
            )
        if given is not None and own.shape is not None and list(given) != list(own.shape):
            raise SpecError(
                None,
                f"the spec expects input '{name}' of shape {tuple(own.shape)} but the data has "
                f"{tuple(given)}: remove its shape from the spec or choose matching data.",
            )
        if not shape or any(int(d) < 1 for d in shape):
            raise SpecError(
                None,
                f"input shape {tuple(shape)} is not valid: every dimension must be at least 1.",
            )
        tokens = bool(data.get(name, {}).get("tokens", own.tokens)) if data else own.tokens
        filled[name] = InputSpec(shape=[int(d) for d in shape], tokens=tokens)
    spec = spec.model_copy(deep=True)
    if (
        next(iter(filled)) != spec.first_input
    ):  # "input" would name another input: name them all explicitly
        refs, old = spec.input_refs(), spec.input_ids()
        by_old = {ref: input_ref(name, next(iter(filled))) for name, ref in refs.items()}
        for node in spec.nodes:
            if any(i in by_old for i in old[node.id]):
                node.inputs = [by_old.get(i, i) for i in old[node.id]]
    spec.inputs = filled
    return spec


def _build(spec: ModelSpec, device, keep_going: bool = False):
    """Build each node's module on `device` in order, running it once on meta tensors to get its shape. `spec` has
    its inputs resolved (`_resolve_inputs`).

    Yields (module, NodeInfo) per node; raises SpecError at the first node that does not fit, or with
    `keep_going` (shapes for the Build page) once every node that does not depend on it has been yielded.
    """
    inputs = spec.input_ids()
    refs = spec.input_refs()
    shapes = {refs[name]: tuple(i.shape) for name, i in spec.inputs.items()}
    first: SpecError | None = None
    for node in spec.execution_order():
        if first is not None and any(i not in shapes for i in inputs[node.id]):
            continue  # it reads a node that failed
        op = get_op(node.op)
        try:
            if not inputs[node.id]:
                raise SpecError(None, NO_INPUT)
            if not op.min_inputs <= len(inputs[node.id]) <= op.max_inputs:
                raise SpecError(
                    None,
                    f"{node.op} takes {op.min_inputs}-{op.max_inputs} inputs but was given "
                    f"{len(inputs[node.id])}.",
                )
            in_shapes = [shapes[i] for i in inputs[node.id]]
            params = op.params.model_validate(node.params)
            module, out, flops = _on_meta(node.op, params, in_shapes)
        except SpecError as e:
            if not keep_going:
                raise SpecError(node.id, e.message) from None
            first = first or SpecError(node.id, e.message)
            continue
        if device != "meta":
            with torch.device(device):
                module = op.build(params, in_shapes)
        shapes[node.id] = tuple(out.shape[1:])
        yield (
            module,
            NodeInfo(
                node.id,
                node.op,
                inputs[node.id],
                shapes[node.id],
                sum(p.numel() for p in module.parameters()),
                flops.get_total_flops() // 4,
            ),
        )
    if first is not None:
        raise first


def _on_meta(op_name: str, params, in_shapes: list[tuple[int, ...]]):
    """Build one node on the meta device and run it once: (module, output, flop counter); a SpecError when the
    inputs do not fit it."""
    op = get_op(op_name)
    try:
        with torch.device("meta"):
            module = op.build(params, in_shapes)
            module.eval()
            with FlopCounterMode(display=False) as flops:
                out = module(*[torch.empty((2, *s)) for s in in_shapes])
    except SpecError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        got = ", ".join(str(s) for s in in_shapes)
        raise SpecError(
            None,
            f"{op_name} cannot take input of shape {got}: {str(e).splitlines()[0]}. "
            "Check this layer's settings or the layer before it.",
        ) from None
    return module, out, flops


@functools.lru_cache(maxsize=8192)
def fits(op_name: str, params_json: str, in_shapes: tuple[tuple[int, ...], ...]) -> bool:
    """Whether a node of `op_name` with these params takes inputs of these shapes (the canvas highlights the
    inputs a dragged connection could join)."""
    op = get_op(op_name)
    try:
        _on_meta(op_name, op.params.model_validate(json.loads(params_json)), list(in_shapes))
    except Exception:  # noqa: BLE001 - a probe: any failure means "does not fit"
        return False
    return True


def infer_shapes(spec: ModelSpec | dict, input_shape=None) -> list[NodeInfo]:
    """Every node's output shape and parameter count, at no memory cost (meta device)."""
    infos, error = analyse(spec, input_shape)
    if error is not None:
        raise SpecError(error.node_id, error.message)  # a fresh one: the remembered error is shared
    return infos


def analyse(spec: ModelSpec | dict, input_shape=None) -> tuple[list[NodeInfo], SpecError | None]:
    """Shapes of the nodes up to the first error, and that error (None when the whole model fits). Every page
    shows the model's summary, so results are remembered per (spec, input shape)."""
    try:
        spec = spec if isinstance(spec, ModelSpec) else parse_spec(spec, counts=False)
    except SpecError as e:  # a graph that does not parse (a cycle, an unknown op): no shapes at all
        return [], e
    infos, error = _analysed(
        spec.model_dump_json(exclude={"layout"}), json.dumps(input_shape)
    )  # as text: hashable, for the cache; where the canvas draws a node does not change the model
    return list(infos), error


@functools.lru_cache(maxsize=64)
def _analysed(spec_json: str, inputs_json: str) -> tuple[tuple[NodeInfo, ...], SpecError | None]:
    infos: list[NodeInfo] = []
    try:
        for _, info in _build(
            _resolve_inputs(parse_spec(spec_json, counts=False), json.loads(inputs_json)),
            "meta",
            keep_going=True,
        ):
            infos.append(info)
    except SpecError as e:
        return tuple(infos), e
    return tuple(infos), None


def compile_spec(
    spec: ModelSpec | dict, input_shape=None, seed: int | None = None
) -> tuple[GraphModel, list[NodeInfo]]:
    """Build the real model (on the CPU; move it with .to()). The returned spec has its input shape filled."""
    spec = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    if seed is not None:
        torch.manual_seed(seed)
    spec = _resolve_inputs(spec, input_shape)
    built = list(_build(spec, "cpu"))
    modules = {info.id: module for module, info in built}
    infos = [info for _, info in built]
    return GraphModel(spec, modules), infos


def memory_estimate(
    infos: list[NodeInfo], batch_size: int, optimizer: str = "adam", bytes_per_value: int = 4
) -> dict:
    """Training memory in bytes: weights, gradients, optimizer state, and activations kept for backward
    (each node's output and its gradient, for one batch)."""
    params = sum(i.params for i in infos)
    activations = sum(math.prod(i.output_shape) for i in infos) * batch_size * 2
    parts = {
        "weights": params,
        "gradients": params,
        "optimizer state": params * OPTIMIZERS[optimizer].state,
        "activations": activations,
    }
    parts = {k: v * bytes_per_value for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts
