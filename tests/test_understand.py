"""Seeing why a model does what it does: the will-it-learn check and explanations."""

import json
from pathlib import Path

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


# ---- explanations


def test_integrated_gradients_add_up_to_the_output_change_from_the_baseline(moons):
    from engine import explain
    from engine.compiler import compile_spec
    from engine.spec import data_inputs

    model, _ = compile_spec(mlp_spec(2), data_inputs(moons.meta), seed=0)
    model.eval()
    x = moons.split("test")[0][:6]
    base = explain.training_mean(moons)
    found = explain.attribute(model, moons.meta, x, "integrated_gradients", target=1, baseline=base)
    with torch.no_grad():
        scores = explain._scores(model, moons.meta)
        change = (scores(x)[:, 1] - scores(base)[:, 1]).numpy()
    assert np.allclose(
        found["attributions"].sum(1), change, atol=1e-3 + 1e-2 * np.abs(change).max()
    )
    assert found["delta"] < 1e-2


def test_grad_cam_lights_the_quadrant_the_model_reads():
    """A model built by hand to read only the top-right quadrant of 16x16 images (where they are bright; their
    bottom-left is dark): Grad-CAM's map falls on the top-right, not on its mirror image."""
    from engine import explain
    from engine.compiler import compile_spec

    spec = {"version": 1, "nodes": [
        {"id": "conv", "op": "conv2d", "params": {"out_channels": 2, "kernel_size": 1}},
        {"id": "relu", "op": "activation", "params": {"kind": "relu"}},
        {"id": "flat", "op": "flatten", "params": {}},
        {"id": "head", "op": "linear", "params": {"out_features": 2}}]}  # fmt: skip
    model, _ = compile_spec(spec, [1, 16, 16])
    with torch.no_grad():
        conv, head = model.layers["conv"], model.layers["head"]
        conv.weight[:] = torch.tensor([2.0, -2.0]).view(
            2, 1, 1, 1
        )  # ch0: bright pixels, ch1: dark ones
        conv.bias[:] = torch.tensor([-1.0, 1.0])
        head.weight.zero_(), head.bias.zero_()
        reads = torch.zeros(2, 16, 16)
        reads[0, :8, 8:] = 1.0  # class 1 reads channel 0 in the top-right quadrant only
        head.weight[1] = reads.flatten()
    x = torch.full((3, 1, 16, 16), 0.5)
    x[:, :, :8, 8:] = 1.0
    x[:, :, 8:, :8] = 0.0
    meta = {"task": "classification", "classes": ["no", "yes"], "input_shape": [1, 16, 16],
            "preprocessing": {"kind": "image"}}  # fmt: skip
    found = explain.attribute(model.eval(), meta, x, "gradcam", target=1)
    cam = found["attributions"]
    assert found["layer"] == "conv" and cam.shape == (3, 16, 16)
    top_right = cam[:, :8, 8:].sum() / cam.sum()
    assert top_right > 0.95, top_right
    png = explain.overlay_png(x[0].numpy(), explain.heatmap(cam[0]))
    assert png.startswith(b"\x89PNG")


def test_permutation_importance_ranks_the_one_informative_column_first(tmp_path):
    """The class follows a categorical column (three values, one-hot encoded); four numeric columns are noise. The
    ranking is per source column, with its one-hot columns shuffled together, and Integrated Gradients on a row
    give that column the largest share too."""
    from engine import explain
    from engine.data.prepare import prepare_file
    from engine.runs import create_run, execute
    from engine.templates import starter_for

    rng = np.random.default_rng(0)
    n = 900
    colour = rng.choice(["red", "green", "blue"], n)
    noise = rng.normal(size=(n, 4))
    label = np.where(colour == "red", "stop", "go")
    lines = ["n1,n2,n3,n4,colour,label"] + [
        f"{a:.3f},{b:.3f},{c:.3f},{d:.3f},{k},{t}"
        for (a, b, c, d), k, t in zip(noise, colour, label, strict=True)
    ]
    ds = prepare_file("\n".join(lines).encode(), "signal.csv", "label")
    run = create_run(starter_for(ds.meta), {"epochs": 8, "lr": 0.01}, ds.path)
    assert execute(run)["status"] == "completed"
    model, dataset = explain.run_parts(run)
    x, y = dataset.split("test")
    result = explain.permutation_importance(model, dataset.meta, x, y)
    ranking = list(result["importances"])
    assert ranking[0] == "colour" and sorted(ranking) == ["colour", "n1", "n2", "n3", "n4"]
    assert (
        result["importances"]["colour"]["mean"]
        > 0.2
        > max(result["importances"][c]["mean"] for c in ranking[1:])
    )
    rows = explain.explain_rows(model, dataset.meta, x[:5], "integrated_gradients",
                                baseline=explain.training_mean(dataset))["rows"]  # fmt: skip
    for row in rows:
        assert max(row["columns"], key=lambda c: abs(row["columns"][c])) == "colour"


def test_cli_explain_writes_overlays_for_images_and_refuses_what_it_cannot_do(tmp_path, capsys):
    from PIL import Image

    from engine.cli import main
    from engine.data.prepare import prepare_builtin
    from engine.runs import create_run, execute
    from engine.templates import starter_for

    ds = prepare_builtin("digits")
    run = create_run(starter_for(ds.meta), {"epochs": 1}, ds.path)
    execute(run)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(ds.split("test")[0][:2]):
        pixels = img[0].float().numpy()
        pixels = pixels * 255 if pixels.max() <= 1 else pixels
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"digit{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    assert (
        main(
            [
                "explain",
                str(run),
                "--method",
                "smoothgrad",
                "--images",
                str(folder),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert sorted(Path(p).name for p in printed["images"]) == ["digit0.png", "digit1.png"]
    assert Image.open(printed["images"][0]).size[0] >= 224
    saved = json.loads((tmp_path / "o" / "attributions.json").read_text())
    assert len(saved["rows"]) == 2 and saved["rows"][0]["target"] in ds.meta["classes"]
    assert main(["explain", str(run), "--method", "permutation", "--out", str(tmp_path / "o")]) == 2
    assert "ranks a table's columns" in capsys.readouterr().err
    out = str(tmp_path / "o")
    assert main(["explain", str(tmp_path / "nope"), "--method", "saliency", "--out", out]) == 2
    assert main(["explain", str(run), "--method", "saliency", "--count", "0", "--out", out]) == 2
    assert "no rows to explain" in capsys.readouterr().err


# ---- receptive field


def test_receptive_fields_grow_with_kernels_and_strides_and_warn_when_the_head_sees_a_part():
    from engine.receptive import receptive_fields

    meta = {"task": "classification", "input_shape": [1, 32, 32], "classes": ["a", "b"]}

    def conv(i, k):
        return {"id": f"conv{i}", "op": "conv2d", "params": {"out_channels": 4, "kernel_size": k}}

    def pool(i):
        return {"id": f"pool{i}", "op": "maxpool2d", "params": {"kernel_size": 2}}

    head = [
        {"id": "flat", "op": "flatten", "params": {}},
        {"id": "out", "op": "linear", "params": {"out_features": 2}},
    ]
    spec = {"version": 1, "nodes": [conv(1, 3), pool(1), conv(2, 3), pool(2), *head]}
    found = receptive_fields(spec, meta)
    assert [(f["id"], f["size"], f["field"], f["jump"]) for f in found["layers"]] == [
        ("conv1", [32, 32], 3, 1), ("pool1", [16, 16], 4, 2), ("conv2", [16, 16], 8, 2), ("pool2", [8, 8], 10, 4)
    ]  # fmt: skip
    assert (
        len(found["warnings"]) == 1
        and "'pool2', sees 10 of the input's 32 pixels" in found["warnings"][0]
    )
    spec["nodes"][4:4] = [{"id": "gap", "op": "global_avgpool", "params": {}}]
    assert receptive_fields(spec, meta)["warnings"] == []  # global pooling sees the whole image
    tiny = {**meta, "input_shape": [1, 4, 4]}
    spec = {"version": 1, "nodes": [pool(1), pool(2), pool(3), *head]}
    warned = receptive_fields(spec, tiny)["warnings"]
    assert any("'pool3' would shrink the size below 1" in w for w in warned)


# ---- training X-ray


def test_the_xray_colours_come_from_the_recorded_diagnostics(moons):
    from engine import xray
    from engine.runs import create_run, execute

    run = create_run(mlp_spec(2), {"epochs": 3, "lr": 0.01}, moons.path)
    assert execute(run)["status"] == "completed"
    looks = xray.looks(run)
    assert len(looks) >= 2
    latest = looks[-1]
    ratios = xray.values(latest, "update_ratio")
    assert set(ratios) == {"fc1", "fc2", "head"} and all(0 < r < 1 for r in ratios.values())
    assert set(xray.values(latest, "dead")) == {"act1"}  # the ReLU
    assert set(xray.values(latest, "saturated")) == {"act2"}  # the tanh
    for signal in xray.SIGNALS:
        found = xray.values(latest, signal)
        assert xray.colours(latest, signal) == {
            nid: xray.colour(signal, v, found) for nid, v in found.items()
        }
    steps, values = xray.history(looks, "fc1")["grad_norm"]
    assert steps == [look["step"] for look in looks]
    assert values == [
        next(la["grad_norm"] for la in look["layers"] if la["id"] == "fc1") for look in looks
    ]


def test_xray_colours_run_from_green_to_red_with_the_signal():
    from engine import xray

    green, red = "#16A34A", "#DC2626"
    assert xray.colour("dead", 0.0, {}) == green and xray.colour("dead", 0.9, {}) == red
    assert xray.colour("update_ratio", 1e-3, {}) == green
    assert (
        xray.colour("update_ratio", 1.0, {}) == red
        and xray.colour("update_ratio", 1e-7, {}) == "#2563EB"
    )
    norms = {"first": 1e-6, "last": 1.0}
    assert (
        xray.colour("grad_norm", 1.0, norms) == green
        and xray.colour("grad_norm", 1e-6, norms) == red
    )
    assert xray.colour("grad_norm", float("nan"), norms) == red


# ---- training dynamics: hard and mislabelled rows, pinned samples


def _flipped_moons(n: int = 800, flip: float = 0.05):
    """Two moons with 5% of the labels flipped on purpose: (the prepared dataset, the flipped rows' positions in
    its training split)."""
    from sklearn.datasets import make_moons

    from engine.data.prepare import prepare_file

    x, y = make_moons(n, noise=0.08, random_state=0)
    rng = np.random.default_rng(1)
    flipped = rng.choice(n, int(n * flip), replace=False)
    y[flipped] = 1 - y[flipped]
    lines = ["a,b,row,label"] + [
        f"{a:.4f},{b:.4f},{i},{'ab'[t]}" for i, ((a, b), t) in enumerate(zip(x, y, strict=True))
    ]
    ds = prepare_file("\n".join(lines).encode(), "moons.csv", "label",
                      plans=None)  # fmt: skip
    return ds, set(flipped.tolist())


def test_the_training_dynamics_map_finds_most_flipped_labels_and_pins_show_when_rows_were_learned():
    from engine.data.prepare import kept_rows
    from engine.runs import create_run, execute
    from engine.train import dynamics

    ds, flipped = _flipped_moons()
    assert "row" not in ds.meta["feature_names"]  # an ID column: ignored, kept for the user
    run = create_run(mlp_spec(2), {"epochs": 20, "lr": 0.01}, ds.path)
    assert execute(run)["status"] == "completed"
    x_train, y_train = ds.split("train")
    found = dynamics.cartography(run, y_train, ds.meta["classes"])
    # every epoch, or every few where a look would cost over 5% of the time
    assert 3 <= found["epochs"] <= 20 and len(found["rows"]) == len(y_train)
    original = kept_rows(ds, "train", [s["row"] for s in found["suspects"]])["row"].tolist()
    in_train = {int(r) for r in kept_rows(ds, "train", list(range(len(y_train))))["row"]} & flipped
    caught = in_train & set(original)
    assert len(caught) >= 0.7 * len(in_train), (len(caught), len(in_train))
    assert len(original) <= 2 * len(in_train)  # few false alarms
    assert found["counts"]["easy"] > 0.8 * len(y_train)
    pins = dynamics.timeline(run, [0, 1, 2], ds.split("val")[1], ds.meta["classes"])
    assert [p["row"] for p in pins] == [0, 1, 2]
    for p in pins:
        assert len(p["predicted"]) == len(p["epochs"]) == found["epochs"]
        if p["learned"] is not None:
            assert all(p["right"][p["epochs"].index(p["learned"]) :])


def test_cli_dynamics_lists_the_suspects_and_train_drops_them(tmp_path, capsys):
    from engine.cli import main
    from engine.data.folds import run_dataset
    from engine.workspace import read_json

    _, flipped = _flipped_moons()
    from sklearn.datasets import make_moons

    x, y = make_moons(800, noise=0.08, random_state=0)
    y[sorted(flipped)] = 1 - y[sorted(flipped)]
    table = tmp_path / "moons.csv"
    table.write_text(
        "a,b,label\n"
        + "\n".join(f"{a:.4f},{b:.4f},{'ab'[t]}" for (a, b), t in zip(x, y, strict=True))
    )
    data = ["--data", str(table), "--target", "label", "--epochs", "12", "--lr", "0.01"]
    assert main(["train", *data, "--out", str(tmp_path / "first")]) == 0
    capsys.readouterr()
    assert (
        main(
            ["dynamics", str(tmp_path / "first"), "--pin", "0,1", "--out", str(tmp_path / "d.json")]
        )
        == 0
    )
    found = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert 3 <= found["epochs"] <= 12 and sum(found["counts"].values()) == found["rows"]
    assert len(found["suspects"]) >= 10 and [p["row"] for p in found["pins"]] == [0, 1]
    assert (
        main(
            [
                "train",
                *data,
                "--drop-rows",
                str(tmp_path / "d.json"),
                "--out",
                str(tmp_path / "second"),
            ]
        )
        == 0
    )
    second = read_json(tmp_path / "second" / "train.json")
    assert second["drop_rows"] == sorted(s["row"] for s in found["suspects"])
    assert len(run_dataset(second).split("train")[1]) == found["rows"] - len(found["suspects"])
    assert main(["train", *data, "--drop-rows", "x,y", "--out", str(tmp_path / "bad")]) == 2
    assert "--drop-rows takes" in capsys.readouterr().err


# ---- would more data help?


@pytest.mark.parametrize(
    "half, whole, kind",
    [
        ((0.80, 0.75), (0.86, 0.82), "more_data"),  # validation still rising: +7 points
        ((0.99, 0.80), (0.99, 0.805), "high_variance"),  # flat, far below training
        ((0.71, 0.70), (0.71, 0.70), "high_bias"),  # flat and close
    ],
)
def test_the_learning_curve_verdict_reads_the_curve(half, whole, kind):
    from engine.learning_curve import verdict

    pts = [
        {"share": 0.5, "train": half[0], "val": half[1]},
        {"share": 1.0, "train": whole[0], "val": whole[1]},
    ]
    assert verdict(pts, "accuracy")["kind"] == kind
    assert verdict(pts[:1], "accuracy") is None  # not before the whole has trained


def test_cli_learning_curve_trains_four_shares_and_gives_a_verdict(tmp_path, capsys):
    from engine.cli import main

    x = np.random.default_rng(0).normal(size=(600, 4))
    label = (x[:, 0] * x[:, 1] > 0).astype(
        int
    )  # an XOR of two columns: a small MLP needs rows to find it
    table = tmp_path / "xor.csv"
    table.write_text(
        "a,b,c,d,label\n"
        + "\n".join(
            ",".join(f"{v:.4f}" for v in r) + f",{t}" for r, t in zip(x, label, strict=True)
        )
    )
    assert main(["train", "--data", str(table), "--target", "label", "--epochs", "8", "--learning-curve",
                 "--out", str(tmp_path / "curve")]) == 0  # fmt: skip
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["type"] == "learning_curve_finished" and last["metric"] == "accuracy"
    rows = [p["rows"] for p in last["points"]]
    assert [p["share"] for p in last["points"]] == [0.1, 0.25, 0.5, 1.0] and rows == sorted(rows)
    assert (
        rows[-1] == 420 and abs(rows[0] - 42) <= 2
    )  # 70% of 600 train; stratified shares round per class
    assert (
        last["verdict"]["kind"] in ("more_data", "high_variance", "high_bias")
        and last["verdict"]["message"]
    )
    assert sorted(p.name for p in (tmp_path / "curve").iterdir() if p.name.startswith("share")) == [
        "share-10", "share-100", "share-25", "share-50"]  # fmt: skip


def test_attention_maps_give_every_head_of_every_block_for_one_input(tmp_path, capsys):
    from engine import explain
    from engine.cli import main
    from engine.data.prepare import prepare_builtin
    from engine.runs import create_run, execute
    from engine.templates import build

    ds = prepare_builtin("reviews")
    run = create_run(build("transformer_text", ds.meta), {"epochs": 1}, ds.path)
    assert execute(run)["status"] == "completed"
    model, _ = explain.run_parts(run)
    x = ds.split("test")[0][:1]
    found = explain.attention_maps(model, ds.meta, x)
    steps = ds.meta["input_shape"][0]
    assert [layer["name"] for layer in found["layers"]] == [
        "encoder · block 1",
        "encoder · block 2",
    ]
    weights = np.array(found["layers"][0]["weights"])
    assert weights.shape == (4, steps, steps) and np.allclose(weights.sum(-1), 1, atol=1e-4)
    assert found["steps"] == [ds.meta["vocab"][int(t)] for t in x[0]]
    assert (
        main(["explain", str(run), "--method", "attention", "--count", "2", "--out", str(tmp_path)])
        == 0
    )
    assert len(json.loads((tmp_path / "attention.json").read_text())) == 2
    from engine.errors import LayerLabError

    with pytest.raises(LayerLabError, match="no attention layer"):
        explain.attention_maps(_no_attention(), ds.meta, x)


def _no_attention():
    from engine.compiler import compile_spec

    return compile_spec(mlp_spec(2), [4])[0]


def test_a_job_whose_process_died_without_a_result_reads_as_failed(workspace):
    import subprocess
    import sys

    from engine import jobs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = workspace / "jobs" / "will-learn" / "x"
    folder.mkdir(parents=True)
    (folder / "pid").write_text(str(dead.pid))
    state = jobs.state(folder)
    assert state["state"] == "failed" and "stopped before it finished" in state["message"]
    assert jobs.state(workspace / "jobs" / "gone")["state"] == "failed"
    (folder / "result.json").write_text('{"ok": 1}')
    assert jobs.state(folder) == {"state": "done", "result": {"ok": 1}}
