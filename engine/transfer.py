"""Transfer learning: saved weights into a model by node id and shape, with a report (no Streamlit).

A `.safetensors` file (LayerLab's, or any with `layers.<node id>.<tensor>` keys), a LayerLab bundle (.zip, its
weights.safetensors) or a `.pt` state_dict (read with `weights_only=True`: nothing that needs unpickling is
loaded) is matched tensor by tensor against a model:
a tensor of the same name and shape is loaded, any other is skipped with the reason, and the model's tensors
that found no match keep their fresh initialization.
"""

from pathlib import Path

import torch

from engine.compiler import compile_spec
from engine.errors import LayerLabError
from engine.export import read_state_dict_pt, read_weights, stored_weights


def read_any_weights(data: bytes, filename: str) -> dict[str, torch.Tensor]:
    ext = Path(filename).suffix.lower()
    if ext in (".safetensors", ".zip"):
        return read_weights(stored_weights(data, Path(filename).name))[0]
    if ext in (".pt", ".pth", ".bin"):
        return read_state_dict_pt(data)
    raise LayerLabError(
        f"'{Path(filename).name}' is not a weights file: choose a .safetensors file, a LayerLab "
        "bundle (.zip) or a .pt state_dict."
    )


def match_weights(spec: dict, input_shape, tensors: dict[str, torch.Tensor]) -> dict:
    """Which of `tensors` fit the model `spec` builds: {"state": the matching tensors, "loaded": names,
    "skipped": [(name, why)], "missing": the model's names left at their initialization}."""
    model, _ = compile_spec(spec, input_shape)
    own = model.state_dict()
    state, loaded, skipped = {}, [], []
    for name, tensor in tensors.items():
        if name not in own:
            skipped.append((name, "no layer with this id and tensor in the model"))
        elif tuple(tensor.shape) != tuple(own[name].shape):
            skipped.append(
                (name, f"shape {tuple(tensor.shape)}, the model's is {tuple(own[name].shape)}")
            )
        else:
            state[name] = tensor.to(own[name].dtype)
            loaded.append(name)
    return {
        "state": state,
        "loaded": loaded,
        "skipped": skipped,
        "missing": [k for k in own if k not in state],
    }
