"""ModelSpec: a versioned, validated graph of nodes that round-trips through JSON.

{"version": 2, "inputs": {"features": {"shape": [...]}, "review": {"shape": [64], "tokens": true}},
 "nodes": [{"id", "op", "params", "inputs"}], "output": id}

A model has one or more named inputs (like Keras' functional API). A node takes one as `input:<name>`; `input`
alone is the first one, and the first node without `inputs` takes it too (a node without `inputs` takes the
previous node's output). An input without a shape takes the dataset's. Saved specs carry every default
explicitly. Version 1 had one unnamed input (`"input": {"shape": ...}`): it loads as the input `features`.
"""

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import SpecError
from engine.registry import get_op, ops
from engine.tasks import output_units

SPEC_VERSION = 2
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
FIRST_INPUT = "features"  # a single-input model's input, and what version 1's one input became
INPUT_PREFIX = "input:"


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    op: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: list[str] | None = (
        None  # None: the previous node's output; []: not connected yet (an error)
    )


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shape: list[int] | None = None
    tokens: bool = False  # token ids (integers below a vocabulary size), for an Embedding


def _one_input() -> dict[str, InputSpec]:
    return {FIRST_INPUT: InputSpec()}


def input_ref(name: str, first: str) -> str:
    """How a node names the input `name`: `input` for the first one, else `input:<name>`."""
    return "input" if name == first else INPUT_PREFIX + name


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = SPEC_VERSION
    inputs: dict[str, InputSpec] = Field(default_factory=_one_input)
    nodes: list[NodeSpec]
    output: str | None = None
    layout: dict[str, list[float]] | None = (
        None  # where the Build page's canvas draws each node; not the model
    )

    @property
    def first_input(self) -> str:
        return next(iter(self.inputs))

    def input_refs(self) -> dict[str, str]:
        """Each input's name → how nodes name it (the first one is `input`)."""
        return {name: input_ref(name, self.first_input) for name in self.inputs}

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", exclude={"layout"} if self.layout is None else None)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def input_ids(self) -> dict[str, list[str]]:
        """Each node's inputs, with the implicit 'previous node' made explicit (`input:<first>` reads `input`)."""
        out, prev = {}, "input"
        same = {INPUT_PREFIX + self.first_input: "input"}
        for node in self.nodes:
            out[node.id] = (
                [same.get(i, i) for i in node.inputs] if node.inputs is not None else [prev]
            )
            prev = node.id
        return out

    def output_id(self) -> str:
        return self.output or self.nodes[-1].id

    def execution_order(self) -> list[NodeSpec]:
        """Nodes in an order where every input comes first (list order where it allows); a cycle is a SpecError."""
        inputs = self.input_ids()
        by_id = {n.id: n for n in self.nodes}
        order: list[NodeSpec] = []
        state: dict[str, int] = {}  # 1: being visited, 2: done

        def visit(nid: str, path: list[str]) -> None:
            if state.get(nid) == 2:
                return
            if state.get(nid) == 1:
                loop = path[path.index(nid) :] + [nid]
                raise SpecError(
                    nid,
                    f"is part of a cycle ({' → '.join(loop)}): data must flow one way. Remove one "
                    "of these inputs.",
                )
            state[nid] = 1
            for src in inputs[nid]:
                if src in by_id:
                    visit(src, path + [nid])
            state[nid] = 2
            order.append(by_id[nid])

        for node in self.nodes:
            visit(node.id, [])
        return order


NO_INPUT = (
    "has no input: drag from another layer's output (its right edge) to this layer, or choose 'Input from' "
    "in its settings."
)


def _pretty_validation(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"])
        parts.append(f"{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(parts)


def migrate(data: dict) -> dict:
    """An older spec in today's format: version 1's one unnamed input becomes the input `features`."""
    version = data.get("version", 1 if "input" in data and "inputs" not in data else SPEC_VERSION)
    if version == 1:
        one = data.get("input")
        data = {k: v for k, v in data.items() if k != "input"}
        data["inputs"] = {FIRST_INPUT: one if isinstance(one, dict) else {}}
        version = data["version"] = SPEC_VERSION
    if version != SPEC_VERSION:
        raise SpecError(
            None,
            f"this spec has version {version!r}, but LayerLab reads versions 1 and {SPEC_VERSION}. "
            f'Save it again from the Build page or set "version": {SPEC_VERSION}.',
        )
    return data


MAX_NODES = 1000  # layers in one model: the Build page lints and draws every one on each change


def parse_spec(data: dict | str, counts: bool = True) -> ModelSpec:
    """Validate a spec (dict or JSON text) and return it with every param default filled in. Without `counts`,
    a layer given too few or too many inputs is left for the compiler to name (the Build page's shapes then
    reach every other layer)."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise SpecError(
                None,
                f"the spec is not valid JSON ({e.msg} at line {e.lineno}). "
                "Fix the file or save a new one from the Build page.",
            ) from None
        except RecursionError:
            raise SpecError(
                None,
                "the spec nests lists or objects too deeply to be a model. Save a new one from the "
                "Build page.",
            ) from None
    if not isinstance(data, dict):
        raise SpecError(None, 'a spec must be a JSON object with a "nodes" list.')
    try:
        spec = ModelSpec.model_validate(migrate(data))
    except ValidationError as e:
        raise SpecError(None, f"the spec is malformed: {_pretty_validation(e)}.") from None
    if not spec.nodes:
        raise SpecError(
            None, "the model has no layers: add at least one layer (the last one is the output)."
        )
    if len(spec.nodes) > MAX_NODES:
        raise SpecError(
            None,
            f"the model has {len(spec.nodes):,} layers; LayerLab builds at most {MAX_NODES:,}. "
            "Use fewer, larger layers.",
        )
    if not spec.inputs:
        raise SpecError(
            None,
            f'the model has no inputs: give it at least one, e.g. "inputs": '
            f'{{"{FIRST_INPUT}": {{}}}}.',
        )
    for name in spec.inputs:
        if not _ID.match(name):
            raise SpecError(
                None,
                f"input name '{name}' is not valid: start with a letter or _, use only letters, "
                "digits and _.",
            )
    refs = set(spec.input_refs().values()) | {INPUT_PREFIX + spec.first_input}
    seen: set[str] = set()
    for node in spec.nodes:
        if not _ID.match(node.id) or node.id == "input":
            raise SpecError(
                node.id,
                "node ids must start with a letter or _, use only letters, digits and _, "
                "and not be 'input'. Rename the node.",
            )
        if node.id in seen:
            raise SpecError(node.id, "two nodes share this id. Give each node its own id.")
        op = get_op(node.op)
        if op is None:
            raise SpecError(
                node.id, f"unknown op '{node.op}'. Known ops: {', '.join(sorted(ops()))}."
            )
        try:
            node.params = op.params.model_validate(node.params).model_dump(mode="json")
        except ValidationError as e:
            raise SpecError(
                node.id, f"bad parameters for {node.op}: {_pretty_validation(e)}."
            ) from None
        n_in = len(node.inputs) if node.inputs else 1
        if counts and node.inputs != [] and not op.min_inputs <= n_in <= op.max_inputs:
            raise SpecError(
                node.id,
                f"{node.op} takes {op.min_inputs}-{op.max_inputs} inputs but was given {n_in}.",
            )
        seen.add(node.id)
    for node in spec.nodes:
        for src in node.inputs or []:
            if src not in refs and src not in seen:
                raise SpecError(
                    node.id,
                    f"takes its input from '{src}', which is neither an input nor a node of "
                    f"this model. Use one of: "
                    f"{', '.join(sorted(spec.input_refs().values()) + sorted(seen - {node.id}))}.",
                )
    if spec.output is not None and spec.output not in seen:
        raise SpecError(
            None, f"the output '{spec.output}' is not a node of this model. Name one of its nodes."
        )
    spec.execution_order()  # raises on a cycle
    return spec


def new_node_id(spec_nodes, op: str) -> str:
    taken = {n["id"] if isinstance(n, dict) else n.id for n in spec_nodes}
    i = 1
    while f"{op}_{i}" in taken:
        i += 1
    return f"{op}_{i}"


def default_params(op: str) -> dict:
    return get_op(op).params().model_dump(mode="json")


def data_inputs(meta: dict):
    """What a dataset feeds a model, for the compiler: its one shape, or {name: {"shape", "tokens"}} for a table
    with text and other columns (its rows hold the parts side by side, in this order)."""
    return meta.get("inputs") or tuple(meta["input_shape"])


def data_parts(meta: dict, first: str = FIRST_INPUT) -> dict[str, dict]:
    """A dataset's inputs as {name: {"shape", "tokens"}}: its named parts, or its one part under the name `first`
    (the model's own name for its one input)."""
    return meta.get("inputs") or {
        first: {"shape": list(meta["input_shape"]), "tokens": bool(token_vocab(meta))}
    }


def input_sources(spec: dict, meta: dict) -> dict[str, tuple[int, ...]]:
    """What a node of `spec` can take as input on this data: each input's reference (`input`, `input:review`)
    and its shape. The data's parts the spec does not declare are offered too (set_inputs declares them)."""
    declared = list(spec.get("inputs") or {FIRST_INPUT: {}})
    parts = meta.get("inputs") or {declared[0]: {"shape": meta["input_shape"]}}
    names = declared + [n for n in parts if n not in declared]
    return {
        input_ref(n, declared[0]): tuple((parts.get(n) or {}).get("shape") or ()) for n in names
    }


def token_vocab(meta: dict) -> int | None:
    """The vocabulary size when a dataset's input is token ids and nothing else (a text column alone), else None."""
    if meta.get("vocab_size") and not (meta.get("preprocessing") or {}).get("columns"):
        return int(meta["vocab_size"])
    return None


def starter_spec(
    task: str, input_shape, num_classes: int | None, vocab_size: int | None = None
) -> dict:
    """A small model that fits the dataset: [flatten] Dense 64 relu, Dense 64 relu, Dense (classes or 1); for token
    ids (`vocab_size`), an Embedding and the mean over the tokens first, so no Dense reads ids as numbers."""
    if vocab_size and len(input_shape) == 1:
        nodes = [
            {
                "id": "embedding",
                "op": "embedding",
                "params": {"num_embeddings": vocab_size, "embedding_dim": 32},
            },
            {"id": "pool", "op": "seq_pool", "params": {"mode": "masked_mean"}},
        ]
    else:
        nodes = [{"id": "flatten", "op": "flatten"}] if len(input_shape) > 1 else []
    nodes += [
        {"id": "dense_1", "op": "linear", "params": {"out_features": 64}},
        {"id": "relu_1", "op": "activation", "params": {"kind": "relu"}},
        {"id": "dense_2", "op": "linear", "params": {"out_features": 64}},
        {"id": "relu_2", "op": "activation", "params": {"kind": "relu"}},
        {
            "id": "output",
            "op": "linear",
            "params": {"out_features": output_units(task, num_classes)},
        },
    ]
    return parse_spec({"version": SPEC_VERSION, "nodes": nodes}).to_dict()


# Editing a spec dict (what the Build page does). Each returns a new dict; none validates.
def data_defaults(op: str, dataset_meta: dict | None) -> dict:
    """Params a new node should take from the dataset rather than its defaults (an embedding's vocabulary)."""
    if op == "embedding" and dataset_meta and dataset_meta.get("vocab_size"):
        return {"num_embeddings": dataset_meta["vocab_size"]}
    return {}


def insert_node(
    spec: dict, op: str, index: int | None = None, dataset_meta: dict | None = None
) -> tuple[dict, str]:
    """Insert a node with default params (or the dataset's, see data_defaults); a merge op starts wired to the
    two nodes before it."""
    nodes = [dict(n) for n in spec["nodes"]]
    node_id = new_node_id(nodes, op)
    index = len(nodes) if index is None else max(0, min(index, len(nodes)))
    inputs = None
    if get_op(op).min_inputs > 1:
        inputs = (["input"] + [n["id"] for n in nodes[:index]])[-2:]
    params = {**default_params(op), **data_defaults(op, dataset_meta)}
    nodes.insert(index, {"id": node_id, "op": op, "params": params, "inputs": inputs})
    return {**spec, "nodes": nodes}, node_id


def move_node(spec: dict, node_id: str, index: int) -> dict:
    nodes = [dict(n) for n in spec["nodes"]]
    i = next(k for k, n in enumerate(nodes) if n["id"] == node_id)
    node = nodes.pop(i)
    nodes.insert(max(0, min(index, len(nodes))), node)
    return {**spec, "nodes": nodes, "output": None}


def remove_node(spec: dict, node_id: str) -> dict:
    """Remove a node; nodes that named it as an input take its input instead."""
    ids = [n["id"] for n in spec["nodes"]]
    i = ids.index(node_id)
    gone = spec["nodes"][i]
    feeds = gone.get("inputs") or [ids[i - 1] if i else "input"]
    nodes = []
    for n in spec["nodes"]:
        if n["id"] == node_id:
            continue
        n = dict(n)
        if n.get("inputs"):
            n["inputs"] = [x for src in n["inputs"] for x in (feeds if src == node_id else [src])]
        nodes.append(n)
    output = spec.get("output")
    return {**spec, "nodes": nodes, "output": None if output == node_id else output}


def set_inputs(spec: dict, node_id: str, inputs: list[str] | None) -> dict:
    """Wire a node; an `input:<name>` the spec does not declare yet becomes one of its inputs."""
    nodes = [
        dict(n, inputs=inputs or None) if n["id"] == node_id else dict(n) for n in spec["nodes"]
    ]
    declared = dict(spec.get("inputs") or {FIRST_INPUT: {}})
    for ref in inputs or []:
        if ref.startswith(INPUT_PREFIX) and ref[len(INPUT_PREFIX) :] not in declared:
            declared[ref[len(INPUT_PREFIX) :]] = {"shape": None}
    return {**spec, "nodes": nodes, "inputs": declared}


def set_params(spec: dict, node_id: str, params: dict) -> dict:
    nodes = [dict(n, params=params) if n["id"] == node_id else dict(n) for n in spec["nodes"]]
    return {**spec, "nodes": nodes}
