"""A model as plain PyTorch source: `model.py` with an `nn.Module` class and no LayerLab import.

Every layer module was made through `engine.registry.make`, which keeps its constructor call as source; the
few layers of LayerLab's own (self-attention, the recurrent wrapper, reshape…) are copied in from their
definitions, which import only torch. The module keys are the spec's node ids, as in LayerLab, so the
`weights.safetensors` of a run loads into the class unchanged, and the modules are listed in build order, so
`torch.manual_seed(seed)` before `Model()` gives the same initial weights as a LayerLab run with that seed.
"""

import inspect
import keyword
import math
import re
import textwrap

from engine.compiler import GraphModel
from engine.layers.init import initialize

HEADER = '''"""{name}: the model as plain PyTorch, written by LayerLab. It needs torch (and safetensors to load
the weights), not LayerLab.

    from model import load
    model = load("weights.safetensors")  # in eval mode
    {usage}
{output_note}"""

{imports}
INPUTS = {inputs!r}  # each input's shape for one sample, without the batch dimension
'''

LOADER = '''

def load(path="weights.safetensors", device="cpu") -> Model:
    """The model with the trained weights from `path`, in eval mode."""
    from safetensors.torch import load_file

    model = Model()
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()


if __name__ == "__main__":
    import sys

    model = load(sys.argv[1] if len(sys.argv) > 1 else "weights.safetensors")
    print(model)
    with torch.no_grad():
        print("output shape for a batch of 2:", tuple(model(*[torch.zeros(2, *s) for s in INPUTS.values()]).shape))
'''


def _variable(node_id: str, taken: set[str]) -> str:
    """A Python name for a node's output."""
    name = re.sub(r"\W", "_", node_id)
    if not name or name[0].isdigit() or keyword.iskeyword(name) or name in ("x", "self"):
        name = f"n_{name}"
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _helpers(model: GraphModel) -> list[type]:
    """LayerLab's own layer classes the model uses (their definitions import only torch)."""
    classes = {type(m) for m in model.layers.values() if not type(m).__module__.startswith("torch")}
    return sorted(classes, key=lambda c: c.__name__)


def model_code(model: GraphModel, name: str = "Model") -> str:
    """`model.py` for a compiled model (any weights: the file holds the architecture, the weights load into it)."""
    helpers = [textwrap.dedent(inspect.getsource(c)).strip() for c in _helpers(model)]
    if any(module.source.startswith("initialize(") for module in model.layers.values()):
        helpers.append(
            inspect.getsource(initialize).strip()
        )  # weight initialization chosen on the Build page
    packed = len(model.spec.inputs) > 1
    imports = (
        "import math\n\n" if packed or any("math." in h for h in helpers) else ""
    ) + "import torch\nfrom torch import nn\n"
    last = model.spec.nodes[-1] if model.spec.nodes else None
    squash = last.params.get("kind") if last is not None and last.op == "activation" else None
    note = (
        f"\nThe outputs have been through {squash} already.\n"
        if squash in ("softmax", "sigmoid")
        else ""
    )
    inputs = {name: tuple(i.shape) for name, i in model.spec.inputs.items()}
    parts = [
        HEADER.format(
            name=name.replace('"', "'"),
            usage=usage(model),
            output_note=note,
            imports=imports,
            inputs=inputs,
        )
    ]
    parts += [f"\n\n{h}\n" for h in helpers]
    layers = "\n".join(
        f"            {nid!r}: {module.source}," for nid, module in model.layers.items()
    )
    parts.append(f'''

class Model(nn.Module):
    """{len(model.layers)} layers; `layers[node id]` holds each one, as in LayerLab's state_dict."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleDict({{
{layers}
        }})

    def forward(self, {"x" if model.chain else "*inputs"}):
{textwrap.indent(_forward(model), " " * 8)}
''')
    parts.append(LOADER)
    return "".join(parts)


def usage(model: GraphModel) -> str:
    """The line that calls the model, with what it takes."""
    shapes = [tuple(i.shape) for i in model.spec.inputs.values()]
    if len(shapes) == 1:
        return f"outputs = model(batch)  # batch: a tensor of shape (N, {', '.join(map(str, shapes[0]))})"
    width = sum(math.prod(s) for s in shapes)
    return (
        f"outputs = model({', '.join(model.spec.inputs)})  # a batch per input, shaped (N, *INPUTS[name]); or "
        f"model(rows), rows (N, {width}): each row's inputs flattened side by side in INPUTS' order"
    )


def _forward(model: GraphModel) -> str:
    if model.chain:
        return "\n".join(f"x = self.layers[{nid!r}](x)" for nid, _ in model.plan) + "\nreturn x"
    taken: set[str] = set()
    names = {ref: _variable(name, taken) for name, ref in model.spec.input_refs().items()}
    lines = []
    if len(names) > 1:
        lines += [
            "if len(inputs) == 1:  # one packed tensor: each row's inputs flattened side by side",
            "    at, parts = 0, []",
            "    for shape in INPUTS.values():",
            "        width = math.prod(shape)",
            "        parts.append(inputs[0][:, at:at + width].reshape(-1, *shape))",
            "        at += width",
            "    inputs = parts",
        ]
    lines.append(f"{', '.join(names.values())}, = inputs")
    for nid, ins in model.plan:
        names[nid] = _variable(nid, taken)
        lines.append(f"{names[nid]} = self.layers[{nid!r}]({', '.join(names[i] for i in ins)})")
    lines.append(f"return {names[model.spec.output_id()]}")
    return "\n".join(lines)
