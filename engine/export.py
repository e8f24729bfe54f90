"""Weights out and in: safetensors with the spec in its metadata, a plain state_dict .pt, and the model as
ONNX (dynamic batch, checked with onnxruntime) or TorchScript.

Nothing is ever unpickled: `.pt` files are read with `weights_only=True` only.
"""

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from engine.compiler import GraphModel, compile_spec
from engine.data.store import prediction_meta
from engine.errors import DataError, LayerLabError
from engine.limits import WEIGHTS_BYTES, open_zip, read_zip_entry
from engine.spec import ModelSpec, parse_spec
from engine.workspace import atomic_write_bytes

FORMAT = "layerlab/1"


def _state(model_or_state) -> dict[str, torch.Tensor]:
    state = (
        model_or_state.state_dict()
        if isinstance(model_or_state, torch.nn.Module)
        else model_or_state
    )
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def weights_bytes(model_or_state, spec: ModelSpec, dataset_meta: dict | None = None) -> bytes:
    """Safetensors bytes; metadata holds the spec (input shape filled) and what prediction needs."""
    meta = {"format": FORMAT, "spec": spec.to_json()}
    if dataset_meta is not None:
        meta["dataset"] = json.dumps(prediction_meta(dataset_meta))
    return save(_state(model_or_state), metadata=meta)


def save_weights(
    model_or_state, path: Path, spec: ModelSpec, dataset_meta: dict | None = None
) -> None:
    atomic_write_bytes(Path(path), weights_bytes(model_or_state, spec, dataset_meta))


def state_dict_bytes(model_or_state) -> bytes:
    buf = io.BytesIO()
    torch.save(_state(model_or_state), buf)
    return buf.getvalue()


BUNDLE_WEIGHTS = "weights.safetensors"


def stored_weights(source: Path | bytes, name: str) -> bytes:
    """The safetensors bytes of a weights file, or of the weights.safetensors inside a bundle (zip): sizes are
    checked before reading, and a bundle's entry is read bounded (a hostile zip cannot cost memory)."""
    if isinstance(source, bytes):
        head = source[:4]
    else:
        with Path(source).open("rb") as f:
            head = f.read(4)
    if head == b"PK\x03\x04":
        data = (
            source if isinstance(source, bytes) else Path(source).read_bytes()
        )  # a zip: small, weights compressed
        with open_zip(data, name) as zf:
            if BUNDLE_WEIGHTS not in zf.namelist():
                raise DataError(
                    f"'{name}' is a zip without {BUNDLE_WEIGHTS}, so not a LayerLab bundle: choose the "
                    "bundle from the Export page, or the .safetensors file itself."
                )
            return read_zip_entry(zf, BUNDLE_WEIGHTS, name, WEIGHTS_BYTES)
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    if size > WEIGHTS_BYTES.value:
        raise WEIGHTS_BYTES.refuse(name, f"it holds {WEIGHTS_BYTES.describe(size)}")
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def read_weights(data: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of safetensors bytes."""
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise LayerLabError(
            f"this is not a valid .safetensors file ({e}). Download the weights again."
        ) from None
    return tensors, metadata


def read_state_dict_pt(data: bytes) -> dict[str, torch.Tensor]:
    """A state_dict .pt, loaded with weights_only=True: anything needing unpickling of code is refused."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means the file is not a plain state_dict
        raise LayerLabError(
            "this .pt file is not a plain state_dict of tensors, so it was not loaded "
            f"(LayerLab never unpickles code; {type(e).__name__}). Export it as safetensors."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LayerLabError(
            "this .pt file does not hold a state_dict (a mapping of names to tensors)."
        )
    return state


def load_model(data_or_path: bytes | Path | str) -> tuple[GraphModel, dict]:
    """Compile the spec stored in a LayerLab .safetensors file and load its weights (strict)."""
    data = (
        Path(data_or_path).read_bytes() if isinstance(data_or_path, (str, Path)) else data_or_path
    )
    tensors, metadata = read_weights(data)
    if "spec" not in metadata:
        raise LayerLabError(
            "this .safetensors file carries no LayerLab model spec in its metadata; "
            "load it into a model you build with the same layers instead."
        )
    model, _ = compile_spec(parse_spec(metadata["spec"]))
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model, metadata


def example_input(model: GraphModel, batch: int) -> tuple[torch.Tensor, ...]:
    """A batch the model accepts, one tensor per input: token ids below the vocabulary of the Embedding that reads
    them, else floats in [0, 1) (images arrive scaled, tables standardized)."""
    generator = torch.Generator().manual_seed(0)
    readers = {ins[0]: model.layers[nid] for nid, ins in model.plan if len(ins) == 1}
    xs = []
    for (ref, shape), spec in zip(model.layout, model.spec.inputs.values(), strict=True):
        reader = readers.get(ref)
        if isinstance(reader, torch.nn.Embedding) or spec.tokens:
            vocab = reader.num_embeddings if isinstance(reader, torch.nn.Embedding) else 2
            xs.append(torch.randint(0, vocab, (batch, *shape), generator=generator))
        else:
            xs.append(torch.rand((batch, *shape), generator=generator))
    return tuple(xs)


def input_names(model: GraphModel) -> list[str]:
    """The exported model's input names: `input` for a one-input model, else each input's own name."""
    return ["input"] if len(model.layout) == 1 else list(model.spec.inputs)


def _check(run, model: GraphModel, fmt: str) -> None:
    """The exported model's outputs at batch 1 and 7 against the PyTorch model's."""
    for batch in (1, 7):
        x = example_input(model, batch)
        with torch.no_grad():
            expected = model(*x).numpy()
        got = run(x)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise LayerLabError(
                f"the {fmt} export does not reproduce the model's outputs at batch {batch} (largest "
                f"difference {np.abs(got - expected).max():.3g}); use safetensors instead."
            )


def onnx_bytes(model: GraphModel) -> bytes:
    """ONNX (opset of torch's exporter) with a dynamic batch dimension, checked with onnxruntime at batch 1 and 7."""
    import onnxruntime as ort

    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(
                model,
                example_input(model, 2),
                dynamo=True,
                input_names=input_names(model),
                output_names=["output"],
                dynamic_shapes=(tuple({0: batch} for _ in model.layout),),
                verbose=False,
            )
        data = program.model_proto.SerializeToString()
    except Exception as e:  # noqa: BLE001 - an op the exporter cannot express
        raise LayerLabError(
            f"this model cannot be exported to ONNX ({type(e).__name__}: {str(e)[:200]}); use "
            "safetensors or TorchScript instead."
        ) from None
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    _check(
        lambda xs: session.run(
            None, {n: x.numpy() for n, x in zip(input_names(model), xs, strict=True)}
        )[0],
        model,
        "ONNX",
    )
    return data


def torchscript_bytes(model: GraphModel) -> bytes:
    """TorchScript by tracing (loads with torch.jit.load, also from C++), checked at batch 1 and 7."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # torch marks jit as deprecated in favour of torch.export; it still works
        traced = torch.jit.trace(model, example_input(model, 2), check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        loaded = torch.jit.load(io.BytesIO(buf.getvalue()))
    _check(lambda xs: loaded(*xs).detach().numpy(), model, "TorchScript")
    return buf.getvalue()
