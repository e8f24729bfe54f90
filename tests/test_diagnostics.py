"""Seeing inside: per-layer gradient norms, histograms, dead ReLUs, the coach's advice, the decision boundary."""

import contextlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import engine.train.callbacks as callbacks
import engine.train.loop as loop
from engine.compiler import compile_spec
from engine.data.prepare import prepare_frame
from engine.data.tabular import suggest_columns
from engine.export import load_model
from engine.runs import create_run, execute, read_events
from engine.spec import parse_spec
from engine.train import boundary
from engine.train.config import TrainConfig
from engine.train.diagnostics import Coach, inspect_model
from tests.conftest import mlp_spec


def deep(n: int, act: str, width: int = 32) -> dict:
    nodes = []
    for i in range(n):
        nodes += [
            {"id": f"fc{i}", "op": "linear", "params": {"out_features": width}},
            {"id": f"act{i}", "op": "activation", "params": {"kind": act}},
        ]
    return {
        "version": 1,
        "nodes": nodes + [{"id": "head", "op": "linear", "params": {"out_features": 2}}],
    }


def train(spec, dataset, **cfg) -> list[dict]:
    events = []
    loop.fit(spec, dataset, TrainConfig.parse(cfg), emit=events.append)
    return events


def coached(events) -> list[str]:
    return [e["kind"] for e in events if e["type"] == "coach"]


@pytest.fixture
def every_epoch(monkeypatch):
    monkeypatch.setattr(
        callbacks, "DIAGNOSE_EVERY_S", 0.0
    )  # a look at every epoch end, so short runs are seen
    monkeypatch.setattr(callbacks, "DIAGNOSE_SHARE", float("inf"))


def test_inspection_matches_autograd_and_sees_dead_units():
    model, _ = compile_spec(parse_spec(mlp_spec(2)), (2,), seed=0)
    with torch.no_grad():
        model.layers["fc1"].bias[:16] = -100.0  # half of the first ReLU's units can never fire
    x, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
    diag = inspect_model(model, x, y, torch.nn.functional.cross_entropy, contextlib.nullcontext)
    model.eval()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    layers = {entry["id"]: entry for entry in diag["layers"]}
    for nid in ("fc1", "fc2", "head"):
        expected = torch.sqrt(sum(p.grad.square().sum() for p in model.layers[nid].parameters()))
        assert layers[nid]["grad_norm"] == pytest.approx(float(expected), rel=1e-5)
        assert sum(layers[nid]["weights"]["counts"]) == sum(
            p.numel() for p in model.layers[nid].parameters() if p.dim() > 1
        )
    assert layers["act1"]["dead"] == pytest.approx(0.5, abs=1 / 32)
    assert "dead" not in layers["act2"]  # tanh units are not ReLUs
    assert sum(layers["act1"]["activations"]["counts"]) == 64 * 32


def test_diagnostics_change_nothing_the_training_sees(moons, every_epoch):
    spec = mlp_spec(2) | {
        "nodes": mlp_spec(2)["nodes"][:2]
        + [{"id": "drop", "op": "dropout", "params": {"p": 0.3}}]
        + mlp_spec(2)["nodes"][2:]
    }
    on, off = (
        create_run(spec, {"epochs": 4, "diagnostics": flag}, moons.path) for flag in (True, False)
    )
    for run in (on, off):
        execute(run)
    assert any(e["type"] == "diagnostics" for e in read_events(on)[0])
    assert not any(e["type"] == "diagnostics" for e in read_events(off)[0])
    a, b = load_file(on / "model.safetensors"), load_file(off / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_healthy_run_gets_no_advice(moons, every_epoch):
    events = train(mlp_spec(2), moons, epochs=20, lr=0.01)
    assert events[-1]["metrics"]["val/accuracy"] >= 0.95
    assert sum(e["type"] == "diagnostics" for e in events) >= 20
    assert coached(events) == []


def test_vanishing_gradients_in_a_deep_sigmoid_stack(moons, every_epoch):
    events = train(deep(12, "sigmoid"), moons, epochs=3)
    assert coached(events) == ["vanishing"]
    assert "first layer 'fc0'" in next(e["message"] for e in events if e["type"] == "coach")


def test_exploding_gradients_on_unscaled_inputs(workspace, every_epoch):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (1000, 2))
    frame = pd.DataFrame(
        {"a": x[:, 0] * 5000 + 20000, "b": x[:, 1] * 5000, "label": (x.sum(1) > 0).astype(int)}
    )
    plans = [p.model_copy(update={"scaling": "none"}) for p in suggest_columns(frame, "label")]
    dataset = prepare_frame(frame, "label", name="unscaled", source="test", plans=plans)
    events = train(deep(2, "relu"), dataset, epochs=3)
    assert "exploding" in coached(events)
    assert "Scale the input features" in next(
        e["message"] for e in events if e.get("kind") == "exploding"
    )


def test_overfitting_when_a_big_model_memorizes_noise(workspace, every_epoch):
    rng = np.random.default_rng(
        0
    )  # labels unrelated to the features: all the model can do is memorize
    frame = pd.DataFrame(rng.normal(size=(300, 10)), columns=[f"f{i}" for i in range(10)])
    frame["label"] = rng.integers(0, 2, 300)
    noise = prepare_frame(frame, "label", name="noise", source="test")
    events = train(mlp_spec(2, hidden=256), noise, epochs=60, lr=0.003)
    assert "overfitting" in coached(events)
    said = next(e for e in events if e.get("kind") == "overfitting")
    curve = {e["epoch"]: e["metrics"] for e in events if e["type"] == "epoch_end"}
    best = min(curve, key=lambda k: curve[k]["val/loss"] if k <= said["epoch"] else np.inf)
    assert curve[said["epoch"]]["val/loss"] > curve[best]["val/loss"]
    assert curve[said["epoch"]]["train/loss"] < curve[best]["train/loss"]


def test_plateau_when_the_learning_rate_is_far_too_small(moons, every_epoch):
    events = train(mlp_spec(2), moons, epochs=12, lr=1e-6)
    assert coached(events) == ["plateau"]


def test_boundary_grid_of_a_known_model():
    model, _ = compile_spec(
        parse_spec(
            {"version": 1, "nodes": [{"id": "out", "op": "linear", "params": {"out_features": 2}}]}
        ),
        (2,),
    )
    with torch.no_grad():  # logits (x, y): class 1 wherever y > x
        model.layers["out"].weight.copy_(torch.eye(2))
        model.layers["out"].bias.zero_()
    xs, ys = torch.linspace(-1, 1, 7), torch.linspace(-2, 2, 5)
    grid = boundary.surface(model, xs, ys, "cross_entropy")
    assert np.array(grid["z"]).shape == (5, 7)
    for i, y in enumerate(ys.tolist()):
        for j, x in enumerate(xs.tolist()):
            assert grid["z"][i][j] == (1 if y > x else 0)
            assert grid["confidence"][i][j] == pytest.approx(
                1 / (1 + np.exp(-abs(y - x))), abs=1e-5
            )
    regression, _ = compile_spec(
        parse_spec(
            {"version": 1, "nodes": [{"id": "out", "op": "linear", "params": {"out_features": 1}}]}
        ),
        (2,),
    )
    with torch.no_grad():
        regression.layers["out"].weight.copy_(torch.tensor([[2.0, -1.0]]))
        regression.layers["out"].bias.fill_(0.5)
    surf = boundary.surface(regression, xs, ys, "mse", (3.0, 10.0))
    assert surf["kind"] == "value"
    assert surf["z"][4][0] == pytest.approx((2 * -1 - 1 * 2 + 0.5) * 3 + 10)


def test_run_on_2d_data_writes_the_boundary_of_its_final_model(moons):
    run = create_run(mlp_spec(2), {"epochs": 15, "lr": 0.01}, moons.path)
    execute(run)
    saved = json.loads((run / boundary.BOUNDARY).read_text())
    assert saved["epoch"] == 15 and len(saved["x"]) == len(saved["z"][0]) == boundary.RESOLUTION
    x_train = moons.split("train")[0]
    assert saved["x"][0] < x_train[:, 0].min() and saved["x"][-1] > x_train[:, 0].max()
    model, _ = load_model(run / "model.safetensors")
    again = boundary.surface(
        model, torch.tensor(saved["x"]), torch.tensor(saved["y"]), "cross_entropy"
    )
    assert again["z"] == saved["z"]
    x, y = moons.split("val")  # the heatmap agrees with the model on the points drawn over it
    col = np.abs(np.array(saved["x"])[None, :] - x[:, :1].numpy()).argmin(1)
    row = np.abs(np.array(saved["y"])[None, :] - x[:, 1:].numpy()).argmin(1)
    assert (np.array(saved["z"])[row, col] == y.numpy()).mean() >= 0.9
    assert [a["name"] for a in boundary.axes(moons.meta)] == ["x1", "x2"]


def _diag(loss: float, first: float, last: float, dead: float = 0.0) -> dict:
    return {
        "loss": loss,
        "grad_norm": 1.0,
        "layers": [
            {"id": "fc1", "grad_norm": first},
            {"id": "act1", "dead": dead},
            {"id": "head", "grad_norm": last},
        ],
    }


def test_vanishing_advice_names_what_the_model_has():
    relu = Coach(activations={"relu"}, lr=0.001)
    said = relu.gradients(_diag(0.7, 1e-9, 1.0, dead=0.9))[0]["message"]
    assert (
        "relu instead" not in said
        and "90% of a ReLU layer's units are dead" in said
        and "leaky_relu" in said
    )
    sigmoid = Coach(activations={"sigmoid", "relu"}, lr=0.001)
    said = sigmoid.gradients(_diag(0.7, 1e-9, 1.0))[0]["message"]
    assert "use relu instead of sigmoid" in said and "dead" not in said


def test_a_loss_far_above_the_untrained_models_names_the_learning_rate_first():
    coach = Coach(activations={"relu"}, lr=1e6)
    coach.loss_ref = 0.69
    said = coach.gradients(_diag(18537.0, 1e-9, 1.0, dead=1.0))
    assert [e["kind"] for e in said] == [
        "lr_too_high"
    ]  # not "vanishing", though the gradients vanish too
    assert "learning rate, 1e+06, is most likely too high" in said[0]["message"]
    calm = Coach(activations={"relu"}, lr=1e-3)
    calm.loss_ref = 0.69
    assert calm.gradients(_diag(0.69, 1.0, 1.0)) == []
