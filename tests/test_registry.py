"""One contract test over every registered op (like Keras' run_layer_test)."""

import io
import json

import pytest
import torch

from engine.codegen import model_code
from engine.compiler import compile_spec, infer_shapes
from engine.errors import SpecError
from engine.layers.core import ActivationParams
from engine.registry import FAMILIES, ops
from engine.spec import parse_spec

INPUT_SHAPES = [
    (8,),
    (4, 6, 6),
    (5, 8),
    (4, 12),
]  # features; image; sequence (time, features); (channels, length)


def _spec(name: str) -> dict:
    """The op alone; a merge op takes the model input twice."""
    node = {"id": "n", "op": name}
    if ops()[name].min_inputs > 1:
        node["inputs"] = ["input", "input"]
    return {"nodes": [node]}


def _fits(op, shape) -> bool:
    try:
        infer_shapes(_spec(op), shape)
        return True
    except SpecError:
        return False


def _example(name: str, shape) -> torch.Tensor:
    if name == "embedding":  # token ids, stored as floats like the dataset store does
        return torch.randint(0, 100, (4, *shape)).float()
    return torch.randn(4, *shape, requires_grad=True)


@pytest.mark.parametrize("name", sorted(ops()))
def test_op_contract(name):
    op = ops()[name]
    assert op.family in FAMILIES and op.title and op.doc
    schema = op.params.model_json_schema()
    for field, prop in schema.get("properties", {}).items():
        assert prop.get("title") and prop.get("description"), (
            f"{name}.{field} needs a title and a tooltip"
        )

    shapes = [s for s in INPUT_SHAPES if _fits(name, s)]
    assert shapes, f"{name} builds for none of {INPUT_SHAPES}"
    for shape in shapes:
        spec = _spec(name)
        meta_shape = infer_shapes(spec, shape)[0].output_shape
        model, _ = compile_spec(spec, shape, seed=0)
        model.train()
        x = _example(name, shape)
        out = model(x)
        assert tuple(out.shape[1:]) == meta_shape
        out.float().pow(2).sum().backward()
        if x.requires_grad:
            assert x.grad is not None and torch.isfinite(x.grad).all()
        for pname, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {pname}"
        _same_as_plain_pytorch(spec, shape, model, x.detach())

    # Params round-trip through JSON with every default explicit.
    parsed = parse_spec(_spec(name))
    again = parse_spec(json.loads(parsed.to_json()))
    assert again.nodes[0].params == parsed.nodes[0].params == op.params().model_dump(mode="json")


def _same_as_plain_pytorch(spec, shape, model, x):
    """The model written as plain PyTorch (model.py) starts from the same weights under the same seed and, with
    the trained model's weights loaded, gives the same outputs."""
    namespace = {}
    exec(compile(model_code(model), "model.py", "exec"), namespace)  # noqa: S102 - our own generated code
    torch.manual_seed(0)
    plain = namespace["Model"]()
    ours, theirs = compile_spec(spec, shape, seed=0)[0].state_dict(), plain.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))


def test_activation_kinds_all_build():
    for kind in ActivationParams.model_fields["kind"].annotation.__args__:
        model, _ = compile_spec(
            {"nodes": [{"id": "a", "op": "activation", "params": {"kind": kind}}]}, (5,)
        )
        out = model(torch.randn(3, 5))
        assert out.shape == (3, 5)
    softmax, _ = compile_spec(
        {"nodes": [{"id": "a", "op": "activation", "params": {"kind": "softmax"}}]}, (5,)
    )
    assert torch.allclose(softmax(torch.randn(3, 5)).sum(1), torch.ones(3))


def test_batchnorm_picks_1d_or_2d_from_rank():
    m1, _ = compile_spec({"nodes": [{"id": "bn", "op": "batchnorm"}]}, (6,))
    m2, _ = compile_spec({"nodes": [{"id": "bn", "op": "batchnorm"}]}, (3, 4, 4))
    assert isinstance(m1.layers["bn"], torch.nn.BatchNorm1d)
    assert isinstance(m2.layers["bn"], torch.nn.BatchNorm2d)


@pytest.mark.parametrize("op", ["attention", "transformer_encoder"])
def test_a_causal_attention_never_looks_ahead(op):
    """With `causal`, step t's output depends on steps 0..t only: changing later steps leaves it as it was (and
    without it, it does not). The causal model writes out as plain PyTorch, exports to ONNX (onnxruntime agrees
    at batch 1 and 7, at another length too) and to TorchScript. A spec without the parameter builds as before."""
    import numpy as np
    import onnxruntime as ort

    from engine.export import onnx_bytes, torchscript_bytes

    shape = (6, 8)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    later = x.clone()
    later[:, 4:] = torch.randn(3, 2, 8)
    for causal in (True, False):
        spec = {"nodes": [{"id": "n", "op": op, "params": {"causal": causal, "dropout": 0.0}}]}
        model = compile_spec(spec, shape, seed=0)[0].eval()
        with torch.no_grad():
            before, after = model(x), model(later)
        assert torch.allclose(before[:, :4], after[:, :4], atol=1e-6) == causal
        assert not torch.allclose(before[:, 4:], after[:, 4:])
    causal = {"nodes": [{"id": "n", "op": op, "params": {"causal": True, "dropout": 0.0}}]}
    causal_model = compile_spec(causal, shape, seed=0)[0].eval()
    _same_as_plain_pytorch(causal, shape, causal_model, x)
    session = ort.InferenceSession(onnx_bytes(causal_model), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        xb = torch.randn(batch, *shape)
        with torch.no_grad():
            want = causal_model(xb).numpy()
        got = session.run(None, {session.get_inputs()[0].name: xb.numpy()})[0]
        assert np.allclose(got, want, rtol=1e-4, atol=1e-5)
    scripted = torch.jit.load(io.BytesIO(torchscript_bytes(causal_model)))
    with torch.no_grad():
        assert torch.allclose(scripted(x), causal_model(x), atol=1e-5)
    plain = compile_spec(_spec(op), shape)[0].layers["n"]  # an old spec's model.py is unchanged
    assert "Causal" not in plain.source and not plain.source.endswith(", True)")
