"""Seeing why a model does what it does: the will-it-learn check and explanations."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from engine import registry
from engine.train.learncheck import check_learning
from tests.conftest import mlp_spec


def _items(result: dict) -> dict:
    return {i["id"]: i for i in result["items"]}


def test_a_healthy_model_passes_every_check(moons):
    result = check_learning(mlp_spec(2), moons, {"lr": 1e-3})
    failed = [(i["id"], i["message"]) for i in result["items"] if not i["passed"]]
    assert result["passed"] and not failed, failed
    items = _items(result)
    assert items["init_loss"]["details"]["expected"] == pytest.approx(
        np.log(2), rel=1e-4
    )  # ln C, C = 2
    assert (
        items["overfit"]["details"]["losses"][-1] <= 0.2 * items["overfit"]["details"]["losses"][0]
    )
    assert [layer["id"] for layer in items["scales"]["details"]["layers"]] == [
        "fc1", "act1", "fc2", "act2", "head"]  # fmt: skip


def test_a_learning_rate_of_0_fails_the_overfit_check_with_a_fix_that_passes(moons):
    result = check_learning(mlp_spec(2), moons, {"lr": 0})
    overfit = _items(result)["overfit"]
    assert (
        not result["passed"]
        and not overfit["passed"]
        and "learning rate is 0" in overfit["message"]
    )
    losses = overfit["details"]["losses"]
    assert max(losses) - min(losses) < 1e-6  # nothing moved
    fixed = check_learning(mlp_spec(2), moons, overfit["fix"]["train"])
    assert fixed["passed"], [i["message"] for i in fixed["items"] if not i["passed"]]


def test_a_branch_cut_off_from_the_output_gets_no_gradient_and_its_fix_removes_it(moons):
    spec = mlp_spec(2)
    spec["nodes"].insert(
        2, {"id": "aside", "op": "linear", "params": {"out_features": 8}, "inputs": ["act1"]}
    )
    spec["nodes"][3]["inputs"] = ["act1"]  # fc2 reads act1: 'aside' leads nowhere
    result = check_learning(spec, moons, {"lr": 1e-3})
    grads = _items(result)["gradients"]
    assert not grads["passed"] and grads["details"]["cut"] == ["aside"]
    assert "'aside' gets no gradient" in grads["message"]
    fixed_spec = grads["fix"]["spec"]
    assert "aside" not in [n["id"] for n in fixed_spec["nodes"]]
    assert check_learning(fixed_spec, moons, {"lr": 1e-3})["passed"]


class _WrongReshape(nn.Module):
    """(N, F) -> (F, N) -> transposed back: the same shape, with values moved across samples."""

    def forward(self, x):
        return x.reshape(x.shape[1], x.shape[0]).t()


@pytest.fixture
def wrong_reshape():
    registry.register("wrong_reshape", family="reshape", title="Wrong reshape", doc="test only")(
        lambda p, shapes: _WrongReshape()
    )
    yield
    registry._REGISTRY.pop("wrong_reshape")


def test_a_reshape_that_mixes_the_batch_is_flagged(moons, wrong_reshape):
    spec = mlp_spec(2)
    spec["nodes"].insert(1, {"id": "mix", "op": "wrong_reshape", "params": {}})
    item = _items(check_learning(spec, moons, {"lr": 1e-3}))["independence"]
    assert (
        not item["passed"]
        and "mixes samples" in item["message"]
        and item["details"]["moved"] > 1e-3
    )


def test_init_loss_far_above_a_neutral_guess_is_flagged(moons):
    """Twelve Dense layers with He init and no activation between them: each multiplies the spread by about
    sqrt(2), so the logits start out far too large and the model is confidently wrong."""
    nodes = [{"id": f"d{i}", "op": "linear", "params": {"out_features": 64, "init": "kaiming_normal"}}
             for i in range(12)]  # fmt: skip
    spec = {"version": 1, "nodes": [*nodes, {"id": "head", "op": "linear",
                                             "params": {"out_features": 2, "init": "kaiming_normal"}}]}  # fmt: skip
    item = _items(check_learning(spec, moons, {"lr": 1e-3}))["init_loss"]
    assert not item["passed"] and item["details"]["loss"] > 3 * item["details"]["expected"]
    assert "confidently wrong" in item["message"]


def test_cli_check_prints_each_item_and_exits_1_on_a_failure(tmp_path, capsys):
    from engine.cli import main

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    table = tmp_path / "t.csv"
    table.write_text(
        "a,b,c,label\n" + "\n".join(f"{a:.4f},{b:.4f},{c:.4f},{int(a > 0)}" for a, b, c in x)
    )
    data = ["check", "--data", str(table), "--target", "label"]
    assert main(data) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == [
        "init_loss",
        "gradients",
        "independence",
        "scales",
        "overfit",
    ]
    assert all(line["passed"] for line in lines)
    assert main([*data, "--lr", "0"]) == 1
    out = capsys.readouterr()
    failed = [json.loads(line) for line in out.out.splitlines() if not json.loads(line)["passed"]]
    assert [f["id"] for f in failed] == ["overfit"] and failed[0]["fix"]["train"]["lr"] == 1e-3
    assert "4 of 5 checks passed" in out.err
