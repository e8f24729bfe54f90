"""Transfer learning: saved weights matched by node id and shape with a report; frozen layers stay fixed."""

import io
import pickle

import pytest
import torch
from safetensors.torch import load_file

from engine.compiler import compile_spec
from engine.errors import LayerLabError
from engine.runs import create_run, execute
from engine.transfer import match_weights, read_any_weights
from tests.conftest import mlp_spec
from tests.test_export import Evil


def trained(moons, spec, **train):
    run = create_run(spec, {"epochs": 10, "lr": 0.01, **train}, moons.path)
    execute(run)
    return run


def test_matching_tensors_load_and_frozen_layers_stay_fixed(moons):
    source = trained(moons, mlp_spec(2, hidden=32))
    tensors = read_any_weights((source / "model.safetensors").read_bytes(), "model.safetensors")
    target = mlp_spec(3, hidden=32)  # same body, a 3-class head: the head cannot take the old one
    target["nodes"][-1]["id"] = "head"
    report = match_weights(target, (2,), tensors)
    assert sorted(report["loaded"]) == [
        "layers.fc1.bias",
        "layers.fc1.weight",
        "layers.fc2.bias",
        "layers.fc2.weight",
    ]
    assert ("layers.head.weight", "shape (2, 32), the model's is (3, 32)") in report["skipped"]
    assert sorted(report["missing"]) == ["layers.head.bias", "layers.head.weight"]

    spec = mlp_spec(2, hidden=32)  # fine-tune on the same data: fc1 frozen, the rest trains
    run = create_run(
        spec,
        {"epochs": 3, "lr": 0.01, "freeze": ["fc1"]},
        moons.path,
        init=match_weights(spec, (2,), tensors)["state"],
        parent={"run": "model.safetensors", "name": "model.safetensors", "checkpoint": "imported"},
    )
    execute(run)
    after = load_file(run / "model.safetensors")
    assert torch.equal(after["layers.fc1.weight"], tensors["layers.fc1.weight"])
    assert torch.equal(after["layers.fc1.bias"], tensors["layers.fc1.bias"])
    assert not torch.equal(after["layers.fc2.weight"], tensors["layers.fc2.weight"])  # trained on


def test_weights_of_another_architecture_change_nothing(moons):
    source = trained(
        moons,
        {
            "version": 1,
            "nodes": [
                {"id": "a", "op": "linear", "params": {"out_features": 5}},
                {"id": "b", "op": "linear", "params": {"out_features": 2}},
            ],
        },
    )
    tensors = load_file(source / "model.safetensors")
    report = match_weights(mlp_spec(2), (2,), tensors)
    assert report["loaded"] == [] and report["state"] == {}
    assert len(report["skipped"]) == 4 and len(report["missing"]) == 6
    fresh, _ = compile_spec(mlp_spec(2), (2,), seed=0)
    run = create_run(mlp_spec(2), {"epochs": 1}, moons.path, init=report["state"])
    assert not (run / "init.safetensors").exists()
    again, _ = compile_spec(mlp_spec(2), (2,), seed=0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_a_pickle_payload_is_refused_without_running(capsys):
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1), "x": Evil()}, buf)
    with pytest.raises(LayerLabError, match="never unpickles"):
        read_any_weights(buf.getvalue(), "weights.pt")
    with pytest.raises(LayerLabError):
        read_any_weights(pickle.dumps(Evil()), "weights.pt")
    assert "pwned" not in capsys.readouterr().out
    with pytest.raises(LayerLabError, match="not a weights file"):
        read_any_weights(b"x", "weights.pkl")


def test_freezing_an_unknown_layer_is_refused(moons):
    with pytest.raises(LayerLabError, match="does not have: nope"):
        create_run(mlp_spec(2), {"epochs": 1, "freeze": ["nope"]}, moons.path)
