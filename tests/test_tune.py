"""Tuning: Optuna studies whose trials are runs, the learning-rate range test, k-fold cross-validation and the
validation split."""

import itertools
import json
import time

import numpy as np
import pytest
import torch

from engine import search
from engine.compiler import compile_spec
from engine.crossval import create_folds, summary
from engine.data.folds import fold_view
from engine.data.prepare import prepare_builtin
from engine.data.tabular import Split
from engine.errors import ConfigError, LayerLabError
from engine.runs import execute, list_runs, prepare_resume, read_status, resumable
from engine.spec import data_inputs
from engine.train.config import TrainConfig
from engine.train.lr_find import lr_range_test
from tests.conftest import ROOT, mlp_spec

QUICK = {"epochs": 4, "batch_size": 32, "lr": 0.01, "diagnostics": False}


def study_config(ds, **over) -> dict:
    return {
        "name": "moons search",
        "dataset_dir": str(ds.path),
        "spec": mlp_spec(2),
        "train": QUICK,
        "space": {
            "lr": {"low": 1e-3, "high": 0.1, "log": True},
            "fc1.out_features": {"low": 4, "high": 32},
        },
        "metric": "val/accuracy",
        "direction": "maximize",
        **over,
    }


def run_study(study_dir, timeout=300):
    search.start(study_dir)
    end = time.time() + timeout
    while search.running(study_dir):
        assert time.time() < end, "the study did not finish"
        time.sleep(0.5)
    return search.load(study_dir)


def test_six_trials_on_two_workers_are_six_runs_and_the_best_value_is_the_best_runs_metric(moons):
    study = run_study(search.create_study(study_config(moons, trials=6, workers=2)))
    rows = search.trial_rows(study)
    assert len(rows) == 6 and {r["state"] for r in rows} <= {"complete", "pruned"}
    assert len({r["run"] for r in rows}) == 6
    for row in rows:
        train = json.loads((ROOT / row["run"] / "train.json").read_text())
        assert (
            train["trial"]["number"] == row["number"] and train["trial"]["params"] == row["params"]
        )
        assert train["name"] == f"moons search · trial {row['number']}"
        spec = json.loads((ROOT / row["run"] / "spec.json").read_text())
        width = next(n for n in spec["nodes"] if n["id"] == "fc1")["params"]["out_features"]
        assert width == row["params"]["fc1.out_features"] and 4 <= width <= 32
        assert train["config"]["lr"] == pytest.approx(row["params"]["lr"])
    top = search.best(study)
    assert top["value"] == max(r["value"] for r in rows if r["state"] == "complete")
    assert read_status(top["run"])["metrics"]["val/accuracy"] == pytest.approx(top["value"])
    assert {"Optimization history", "Parallel coordinates", "Intermediate values"} <= set(
        search.figures(study)
    )
    best_run = search.train_best(next(search.studies_dir().iterdir()))
    assert json.loads((best_run / "spec.json").read_text()) == json.loads(
        (ROOT / top["run"] / "spec.json").read_text()
    )


def test_a_trial_far_worse_than_the_earlier_ones_is_pruned_as_a_stopped_resumable_run(moons):
    config = study_config(
        moons,
        train={**QUICK, "epochs": 60},  # long enough for the worker to see the first epochs go by
        space={"lr": {"low": 1e-7, "high": 0.1, "log": True}},
        trials=3,
        enqueue=[
            {"lr": 0.05},
            {"lr": 0.04},
            {"lr": 1e-7},
        ],  # two good trials, then one that cannot learn
    )
    rows = search.trial_rows(run_study(search.create_study(config)))
    assert [r["state"] for r in rows] == ["complete", "complete", "pruned"]
    pruned = ROOT / rows[2]["run"]
    assert read_status(pruned)["state"] == "stopped" and rows[2]["epochs"] < 60
    assert resumable(pruned)
    assert execute(prepare_resume(pruned), resume=True)["status"] == "completed"


def test_grid_search_visits_exactly_the_grid(moons):
    space = {
        "lr": {"choices": [0.01, 0.05]},
        "batch_size": {"choices": [64]},
        "fc1.out_features": {"low": 8, "high": 16, "step": 8},
    }
    config = study_config(
        moons, space=space, sampler="grid", pruner="none", trials=50, train={**QUICK, "epochs": 1}
    )
    study_dir = search.create_study(config)
    assert search.read_config(study_dir).trials == 4  # capped to the grid
    visited = [tuple(sorted(r["params"].items())) for r in search.trial_rows(run_study(study_dir))]
    grid = [tuple(sorted(zip(space, combo, strict=True))) for combo in
            itertools.product([0.01, 0.05], [64], [8, 16])]  # fmt: skip
    assert sorted(visited) == sorted(grid)


@pytest.mark.parametrize(
    "space, message",
    [
        ({}, "empty"),
        ({"fc9.out_features": {"low": 1, "high": 4}}, "no layer 'fc9'"),
        ({"fc1.kernel": {"low": 1, "high": 4}}, "has no setting 'kernel'"),
        ({"lrr": {"low": 0.1, "high": 1}}, "neither a training option"),
        ({"lr": {"low": 0.1, "high": 0.01}}, "must be below"),
        ({"lr": {"low": 0, "high": 1, "log": True}}, "above 0"),
        ({"batch_size": {"low": 1.5, "high": 8}}, "whole numbers"),
        ({"optimizer": {"choices": ["adam", "nonsense"]}}, "would be refused"),
        ({"batch_size": {"low": 16, "high": 64}, "lr": {"low": 0.01, "high": 0.1}}, None),
    ],
)
def test_a_bad_space_is_refused_before_any_trial_with_what_to_fix(moons, space, message):
    config = study_config(moons, space=space, sampler="grid" if message is None else "tpe")
    with pytest.raises(LayerLabError, match=message or "grid search needs a list of choices"):
        search.create_study(config)


def test_the_lr_finder_suggests_a_rate_on_the_falling_part_and_leaves_the_weights_alone(moons):
    spec = mlp_spec(2)
    model, _ = compile_spec(spec, data_inputs(moons.meta), seed=3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    given = model.state_dict()
    result = lr_range_test(spec, moons, TrainConfig(batch_size=32), init_weights=given)
    for k, v in given.items():
        assert torch.equal(v, start[k]), f"{k} changed"
    lrs, losses = result["lrs"], result["losses"]
    at, lowest = result["steepest_at"], result["min_at"]
    assert result["suggestion"] == lrs[at] and at < lowest
    assert (
        losses[at] < losses[0] - 0.05 and losses[lowest] < losses[at]
    )  # falling, not yet at its lowest
    assert (
        1e-4 < result["suggestion"] < 1.0
    )  # Adam on two moons: not the flat start, not the blow-up
    with pytest.raises(ConfigError, match="between 20"):
        lr_range_test(spec, moons, TrainConfig(), steps=5)


def test_k_folds_validate_on_a_partition_of_the_non_test_rows_and_leave_the_test_split(moons):
    runs = create_folds(mlp_spec(2), {**QUICK, "epochs": 2}, moons.path, 4, name="cv")
    views = [fold_view(moons, json.loads((r / "train.json").read_text())["fold"]) for r in runs]
    n = moons.meta["sizes"]["train"] + moons.meta["sizes"]["val"]
    val = np.concatenate([v.meta["positions"]["val"] for v in views])
    assert sorted(val.tolist()) == list(range(n))  # each non-test row validates exactly once
    for v in views:
        assert len(v.meta["positions"]["train"]) + len(v.meta["positions"]["val"]) == n
        assert torch.equal(v.tensors["x_test"], moons.tensors["x_test"])
        counts = np.bincount(v.tensors["y_val"].numpy())
        assert abs(counts[0] - counts[1]) <= 2  # stratified
    for r in runs:
        assert execute(r)["status"] == "completed"
    result = summary(runs)
    accuracies = [f["metrics"]["val/accuracy"] for f in result["folds"]]
    assert result["metrics"]["val/accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert result["metrics"]["val/accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    with pytest.raises(ConfigError, match="between 2 and"):
        create_folds(mlp_spec(2), QUICK, moons.path, 1, name="cv")


def test_the_split_is_chosen_and_stored_with_the_dataset(workspace):
    ds = prepare_builtin("moons", n_samples=1000, split=Split(val=0.2, test=0.1))
    assert ds.meta["sizes"] == {"train": 700, "val": 200, "test": 100}
    assert ds.meta["split"] == {"val": 0.2, "test": 0.1}
    with pytest.raises(ValueError, match="60% or less"):
        Split(val=0.4, test=0.3)


def test_cli_search_lr_find_and_folds(tmp_path, capsys):
    """The commands' main in this process (their own processes are the search's workers): each prints JSON lines
    and ends as documented."""
    from engine.cli import main

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    table = tmp_path / "t.csv"
    rows = ["a,b,c,label"] + [f"{a:.4f},{b:.4f},{c:.4f},{int(a + b > 0)}" for a, b, c in x]
    table.write_text("\n".join(rows) + "\n")
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"low": 1e-3, "high": 0.1, "log": True}}))
    data = ["--data", str(table), "--target", "label", "--epochs", "2"]

    def cli(*args) -> tuple[int, list[dict], str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return (
            code,
            [json.loads(line) for line in out.out.splitlines() if line.startswith("{")],
            out.err,
        )

    code, lines, err = cli(
        "search", *data, "--space", space, "--trials", 2, "--out", tmp_path / "study"
    )
    assert code == 0, err
    assert [line["type"] for line in lines] == [
        "trial_finished",
        "trial_finished",
        "study_finished",
    ]
    done = [line["value"] for line in lines[:2] if line["state"] == "complete"]
    assert lines[-1]["best_value"] == max(done) and lines[-1]["trials"] == 2
    code, lines, err = cli("lr-find", *data, "--steps", 60)
    assert code == 0 and lines[-1]["type"] == "lr_found", err
    code, lines, err = cli(
        "train", *data, "--folds", 3, "--val-split", 0.2, "--out", tmp_path / "cv"
    )
    assert code == 0, err
    last = lines[-1]
    assert last["type"] == "cross_validation_finished" and len(last["folds"]) == 3
    assert set(last["metrics"]["val/accuracy"]) == {"mean", "std", "n"}
    code, _, err = cli("train", *data, "--val-split", 0.7, "--out", tmp_path / "x")
    assert code == 2 and "--val-split" in err


def test_stopping_a_study_stops_its_workers_and_their_runs(moons):
    study_dir = search.create_study(
        study_config(moons, train={**QUICK, "epochs": 500}, trials=4, workers=2)
    )
    search.start(study_dir)
    end = time.time() + 120
    while not any(r["state"] == "running" for r in list_runs()):
        assert time.time() < end, "no trial started"
        time.sleep(0.3)
    search.request_stop(study_dir)
    while search.running(study_dir):
        assert time.time() < end + 60, "the workers did not end"
        time.sleep(0.3)
    assert search.state(study_dir) == "stopped"
    states = {read_status(r["path"])["state"] for r in list_runs()}
    assert states <= {"stopped", "cancelled"} and "stopped" in states
    assert len(list_runs()) <= 2  # no trial was started after the stop


def test_an_architecture_search_repeats_a_block_and_each_trial_trains_its_own_depth(moons):
    assert search.blocks(mlp_spec(2)) == {"fc1": ["fc1", "act1"], "fc2": ["fc2", "act2"]}
    space = {"repeat:fc1": {"low": 1, "high": 3}, "fc1.out_features": {"choices": [8]}}
    config = study_config(
        moons, space=space, sampler="grid", pruner="none", train={**QUICK, "epochs": 1}
    )
    rows = search.trial_rows(run_study(search.create_study(config)))
    depth = {}
    for row in rows:
        spec = json.loads((ROOT / row["run"] / "spec.json").read_text())
        ids = [n["id"] for n in spec["nodes"]]
        depth[row["params"]["repeat:fc1"]] = ids
        assert all(
            n["params"]["out_features"] == 8 for n in spec["nodes"] if n["id"].startswith("fc1")
        )
    assert depth[1] == ["fc1", "act1", "fc2", "act2", "head"]
    assert depth[3] == [
        "fc1",
        "act1",
        "fc1_r2",
        "act1_r2",
        "fc1_r3",
        "act1_r3",
        "fc2",
        "act2",
        "head",
    ]
    with pytest.raises(ConfigError, match="does not start a block"):
        search.create_study(study_config(moons, space={"repeat:head": {"low": 1, "high": 2}}))


def test_ray_tune_runs_the_same_space_and_its_trials_are_runs(moons):
    ray = pytest.importorskip("ray")  # the optional extra: pip install -e '.[ray]'
    from engine.runs import read_events

    study_dir = search.create_study(study_config(moons, trials=3, workers=2))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        search.ray_tune(study_dir, None)
    finally:
        ray.shutdown()
    rows = search.trial_rows(search.load(study_dir), study_dir)
    assert len(rows) == 3 and all(r["run"] for r in rows)
    for row in rows:
        train = json.loads((ROOT / row["run"] / "train.json").read_text())
        assert (
            train["trial"]["params"] == row["params"] and train["trial"]["number"] == row["number"]
        )
        assert 4 <= row["params"]["fc1.out_features"] <= 32
    top = search.best(search.load(study_dir), study_dir)
    seen = [
        e["metrics"]["val/accuracy"] for e in read_events(top["run"])[0] if e["type"] == "epoch_end"
    ]
    assert top["value"] in seen


def test_each_worker_of_a_study_gets_a_gpu_of_its_own():
    assert search.worker_gpu(0, 1) == {}  # one GPU (or none): the trials share it through the queue
    assert search.worker_gpu(3, 4, "") == {
        "CUDA_VISIBLE_DEVICES": "3",
        "LAYERLAB_MACHINE_GPUS": "4",
    }
    assert (
        search.worker_gpu(2, 2, "5,7")["CUDA_VISIBLE_DEVICES"] == "5"
    )  # the GPUs the user made visible
