import io
import pickle

import pytest
import torch

from engine.compiler import compile_spec
from engine.errors import LayerLabError
from engine.export import (
    load_model,
    read_state_dict_pt,
    read_weights,
    state_dict_bytes,
    weights_bytes,
)
from engine.spec import parse_spec
from tests.conftest import mlp_spec


def test_safetensors_round_trip_gives_identical_outputs():
    model, _ = compile_spec(mlp_spec(3), (4,), seed=3)
    model.eval()
    data = weights_bytes(
        model, model.spec, {"id": "d", "task": "classification", "classes": ["a", "b", "c"]}
    )
    tensors, meta = read_weights(data)
    assert parse_spec(meta["spec"]).inputs["features"].shape == [4]
    loaded, meta = load_model(data)
    x = torch.randn(9, 4)
    assert torch.equal(model(x), loaded(x))
    # A freshly compiled model from the spec alone accepts the tensors strictly.
    fresh, _ = compile_spec(parse_spec(meta["spec"]))
    fresh.load_state_dict(tensors, strict=True)
    fresh.eval()
    assert torch.equal(fresh(x), model(x))


def test_state_dict_pt_loads_with_weights_only():
    model, _ = compile_spec(mlp_spec(2), (4,), seed=0)
    state = read_state_dict_pt(state_dict_bytes(model))
    assert set(state) == set(model.state_dict())


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_payload_is_refused_without_running(capsys):
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1), "x": Evil()}, buf)
    with pytest.raises(LayerLabError, match="never unpickles"):
        read_state_dict_pt(buf.getvalue())
    with pytest.raises(LayerLabError):
        read_state_dict_pt(pickle.dumps(Evil()))
    assert "pwned" not in capsys.readouterr().out


def test_corrupt_safetensors_is_refused():
    with pytest.raises(LayerLabError, match="not a valid .safetensors"):
        read_weights(b"garbage bytes that are not safetensors")
