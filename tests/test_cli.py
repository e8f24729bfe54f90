import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, mlp_spec


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def cli_here(capsys, *args) -> tuple[int, str]:
    """The CLI's `main` in this process (its exit code and stderr): refusals come before any training, and a fresh
    interpreter per case would spend seconds importing torch. The real process is covered by the tests above."""
    from engine.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture
def moons_csv(tmp_path):
    from sklearn.datasets import make_moons

    x, y = make_moons(600, noise=0.1, random_state=0)
    path = tmp_path / "moons.csv"
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": np.where(y == 1, "up", "down")}).to_csv(
        path, index=False
    )
    return path


def test_cli_trains_the_starter_model_and_prints_events(moons_csv, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "train",
        "--data",
        moons_csv,
        "--target",
        "label",
        "--epochs",
        40,
        "--lr",
        0.01,
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    final = events[-1]
    assert final["status"] == "completed" and final["samples_per_second"] > 0
    assert final["metrics"]["val/accuracy"] >= 0.95 and "val/loss" in final["metrics"]
    for name in ("model.safetensors", "events.jsonl", "status.json", "spec.json", "train.json"):
        assert (out / name).exists()


def test_cli_trains_a_spec_file_without_input_shape(moons_csv, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(mlp_spec(2)))
    proc = run_cli(
        "train",
        "--data",
        moons_csv,
        "--target",
        "label",
        "--spec",
        spec,
        "--epochs",
        2,
        "--optimizer",
        "sgd",
        "--batch-size",
        16,
        "--seed",
        3,
        "--device",
        "cpu",
        "--out",
        tmp_path / "r",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["status"] == "completed"


def test_cli_regression_reports_mae_and_r2(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    path = tmp_path / "reg.csv"
    pd.DataFrame(
        {"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "y": x @ [1.5, -2.0, 0.5] + 10}
    ).to_csv(path, index=False)
    proc = run_cli(
        "train", "--data", path, "--target", "y", "--epochs", 30, "--out", tmp_path / "r"
    )
    final = json.loads(proc.stdout.splitlines()[-1])
    assert {"val/loss", "val/mae", "val/r2"} <= set(final["metrics"])
    assert final["metrics"]["val/r2"] > 0.9


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--lr", "0"], "lr"),
        (["--batch-size", "100000"], "larger than"),
        (["--target", "nope"], "no column 'nope'"),
        (["--nproc", "0"], "--nproc must be 1 or more"),
        (["--nproc", "3", "--batch-size", "2"], "smaller than the number of processes"),
        (["--nodes", "2"], "--nodes needs --emit-launch"),
        (["--nodes", "0", "--emit-launch", "slurm"], "--nodes must be 1 or more"),
        (["--nproc", "2", "--max-restarts", "-1"], "--max-restarts must be 0 or more"),
        (["--nproc", "2", "--device", "cuda"], "cuda"),
    ],
)
def test_cli_bad_input_exits_nonzero_with_one_line(moons_csv, tmp_path, capsys, extra, words):
    code, err = cli_here(
        capsys, "train", "--data", moons_csv, "--target", "label", "--out", tmp_path / "r", *extra
    )
    assert code == 2
    assert words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_bad_spec_and_missing_file(moons_csv, tmp_path):
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"nodes": [{"id": "x", "op": "conv9d"}]}))
    proc = run_cli(
        "train", "--data", moons_csv, "--target", "label", "--spec", spec, "--out", tmp_path / "r"
    )
    assert proc.returncode == 2 and "Layer 'x': unknown op 'conv9d'" in proc.stderr
    proc = run_cli(
        "train", "--data", tmp_path / "nope.csv", "--target", "y", "--out", tmp_path / "r2"
    )
    assert (
        proc.returncode == 2
        and "no such data file" in proc.stderr
        and "Traceback" not in proc.stderr
    )


def test_engine_never_imports_streamlit():
    offenders = [p for p in (ROOT / "engine").rglob("*.py") if "import streamlit" in p.read_text()]
    assert offenders == []
    code = "import sys, engine.runs, engine.train.loop, engine.cli, engine.export; print('streamlit' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


def test_cli_trains_a_cnn_spec_on_pixel_columns(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    frame = pd.DataFrame(d.data / 16.0, columns=[f"px{i}" for i in range(64)])
    frame["digit"] = d.target
    data = tmp_path / "digits.csv"
    frame.to_csv(data, index=False)
    spec = {
        "nodes": [
            {"id": "img", "op": "reshape", "params": {"shape": [1, 8, 8]}},
            {"id": "conv", "op": "conv2d", "params": {"out_channels": 8}},
            {"id": "relu", "op": "activation"},
            {"id": "pool", "op": "maxpool2d"},
            {"id": "flat", "op": "flatten"},
            {"id": "head", "op": "linear", "params": {"out_features": 10}},
        ]
    }
    (tmp_path / "cnn.json").write_text(json.dumps(spec))
    proc = run_cli(
        "train",
        "--data",
        data,
        "--target",
        "digit",
        "--spec",
        tmp_path / "cnn.json",
        "--epochs",
        8,
        "--lr",
        0.003,
        "--out",
        tmp_path / "r",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["metrics"]["val/accuracy"] > 0.85


@pytest.mark.parametrize(
    "nodes, words",
    [
        (
            [{"id": "a", "op": "linear", "inputs": ["ghost"]}],
            "Layer 'a': takes its input from 'ghost'",
        ),
        (
            [
                {"id": "a", "op": "linear", "inputs": ["b"]},
                {"id": "b", "op": "linear", "inputs": ["a"]},
            ],
            "cycle (a → b → a)",
        ),
        (
            [{"id": "c", "op": "conv2d"}],
            "Layer 'c': Conv 2D needs (channels, height, width) input but got (2,)",
        ),
        (
            [
                {"id": "a", "op": "linear", "params": {"out_features": 3}},
                {"id": "b", "op": "linear", "inputs": ["input"]},
                {"id": "s", "op": "add", "inputs": ["a", "b"]},
            ],
            "Layer 's': add needs inputs of the same shape",
        ),
    ],
)
def test_cli_graph_errors_name_the_node(moons_csv, tmp_path, capsys, nodes, words):
    (tmp_path / "bad.json").write_text(json.dumps({"nodes": nodes}))
    code, err = cli_here(
        capsys,
        "train",
        "--data",
        moons_csv,
        "--target",
        "label",
        "--spec",
        tmp_path / "bad.json",
        "--out",
        tmp_path / "r",
    )
    assert code == 2 and words in err and "Traceback" not in err, err


def test_cli_trains_into_a_relative_folder_and_the_run_is_found_from_elsewhere(
    moons_csv, tmp_path, capsys, monkeypatch
):
    """`--out run1` from the data's folder: the prepared dataset under run1/dataset was then looked up as a
    dataset id in the workspace ("not in the workspace any more"), and the run recorded relative paths."""
    monkeypatch.chdir(moons_csv.parent)
    code, err = cli_here(
        capsys,
        "train",
        "--data",
        moons_csv.name,
        "--target",
        "label",
        "--epochs",
        2,
        "--out",
        "run1",
    )
    assert code == 0, err
    monkeypatch.chdir(ROOT)
    code, err = cli_here(capsys, "evaluate", tmp_path / "run1")
    assert code == 0, err


def test_cli_flags_for_an_optimizers_and_a_schedules_own_settings_reach_the_run(
    moons_csv, tmp_path
):
    out = tmp_path / "run"
    proc = run_cli("train", "--data", moons_csv, "--target", "label", "--epochs", 3,
                   "--optimizer", "sgd", "--momentum", 0.5, "--nesterov", "--scheduler", "plateau",
                   "--plateau-patience", 1, "--gamma", 0.5, "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "train.json").read_text())["config"]
    assert (config["momentum"], config["nesterov"], config["plateau_patience"]) == (0.5, True, 1)
    assert config["gamma"] == 0.5 and config["scheduler"] == "plateau"
    started = json.loads(proc.stdout.splitlines()[0])
    assert started["type"] == "run_started" and started["plan"]["loss"] == "cross_entropy"
