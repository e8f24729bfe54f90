"""Transfer learning: saved weights into a model by node id and shape, with a report (no Streamlit).

A `.safetensors` file (LayerLab's, or any with `layers.<node id>.<tensor>` keys), a LayerLab bundle (.zip, its
weights.safetensors) or a `.pt` state_dict (read with `weights_only=True`: nothing that needs unpickling is
loaded) is matched tensor by tensor against a model:
a tensor of the same name and shape is loaded, any other is skipped with the reason, and the model's tensors
that found no match keep their fresh initialization.
"""

import io
import zipfile
import zlib
from pathlib import Path

import torch

from engine.compiler import compile_spec
from engine.errors import LayerLabError
from engine.export import read_state_dict_pt, read_weights

MAX_WEIGHTS_BYTES = 4 * 2**30  # a bundle's weights.safetensors larger than this is refused before unpacking


def bundle_weights(data: bytes, filename: str) -> bytes:
    """The weights.safetensors inside a LayerLab bundle (zip)."""
    name = Path(filename).name
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            entry = zf.getinfo("weights.safetensors")
            if entry.file_size > MAX_WEIGHTS_BYTES:
                raise LayerLabError(f"'{name}' holds a weights.safetensors of {entry.file_size / 2**30:,.1f} GB, over "
                                    f"the {MAX_WEIGHTS_BYTES / 2**30:g} GB limit.")
            return zf.read(entry)
    except KeyError:
        raise LayerLabError(f"'{name}' is a zip but not a LayerLab bundle (it has no weights.safetensors): upload "
                            "the bundle from the Export page, or the .safetensors file itself.") from None
    except (zipfile.BadZipFile, zlib.error, OSError) as e:
        raise LayerLabError(f"'{name}' is not a readable zip ({e}). Download the bundle again.") from None


def read_any_weights(data: bytes, filename: str) -> dict[str, torch.Tensor]:
    ext = Path(filename).suffix.lower()
    if ext == ".safetensors":
        return read_weights(data)[0]
    if ext == ".zip":
        return read_weights(bundle_weights(data, filename))[0]
    if ext in (".pt", ".pth", ".bin"):
        return read_state_dict_pt(data)
    raise LayerLabError(f"'{Path(filename).name}' is not a weights file: choose a .safetensors file, a LayerLab "
                        "bundle (.zip) or a .pt state_dict.")


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
            skipped.append((name, f"shape {tuple(tensor.shape)}, the model's is {tuple(own[name].shape)}"))
        else:
            state[name] = tensor.to(own[name].dtype)
            loaded.append(name)
    return {"state": state, "loaded": loaded, "skipped": skipped, "missing": [k for k in own if k not in state]}
