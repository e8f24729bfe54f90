"""Quantized variants: each is smaller than its own format in float32 and keeps the test metric within a stated
tolerance on built-in sets (a classifier of images with conv layers, a regressor of a table); the CLI writes one and
prints its size, latency and metric beside the original's; a model it cannot judge is refused with the reason."""

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from engine.data.prepare import prepare_builtin
from engine.errors import LayerLabError
from engine.quantize import FORMATS, compare
from engine.runs import create_run, execute
from engine.templates import build
from tests.conftest import ROOT, mlp_spec

ACCURACY_POINTS = 0.03  # a variant's test accuracy stays within 3 points of the original's
MAE_SHARE = 0.05  # and a regressor's test MAE within 5% of it


def test_variants_are_smaller_and_keep_the_metric(workspace, tmp_path):
    digits = prepare_builtin("digits")
    run = create_run(build("lenet", digits.meta), {"epochs": 6, "lr": 0.003}, digits.path)
    execute(run)
    result = compare(run, keep=tmp_path)
    assert result["metric"] == "accuracy" and result["test_rows"] == digits.meta["sizes"]["test"]
    original, *variants = result["rows"]
    assert original["value"] > 0.8, original
    assert [v["format"] for v in variants] == list(FORMATS)
    for v in variants:
        assert "error" not in v, v
        assert v["bytes"] < v["float_bytes"], v  # smaller than the same format unquantized
        assert abs(v["value"] - original["value"]) <= ACCURACY_POINTS, v
        assert v["ms_b1"] > 0 and v["ms_b32"] > 0
        assert v["flagged"] == (-v["change_pct"] > result["max_drop"])
        assert (tmp_path / v["file"]).stat().st_size == v["bytes"]
    onnx = tmp_path / next(v["file"] for v in variants if v["format"] == "onnx-int8-static")
    ops = {n.op_type for n in __import__("onnx").load(onnx).graph.node}
    assert "QuantizeLinear" in ops  # activations quantized too (static, calibrated)

    # A regressor from the CLI: the file loads in ONNX Runtime, the JSON has the metric beside the original's.
    diabetes = prepare_builtin("diabetes")
    run = create_run(mlp_spec(1, 256), {"epochs": 30, "lr": 0.003}, diabetes.path)
    execute(run)
    out = tmp_path / "small.onnx"
    proc = subprocess.run([sys.executable, "-m", "engine", "export", str(run), "--format", "onnx-int8", "--out",
                           str(out), "--max-drop", "5"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["metric"] == "MAE" and report["bytes"] == out.stat().st_size
    assert report["bytes"] < report["original"]["bytes"] / 2  # int8 weights of a 256-wide MLP
    assert (
        abs(report["variant"]["value"] - report["original"]["value"])
        <= MAE_SHARE * report["original"]["value"]
    )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = diabetes.split("test")[0][:4].numpy()
    assert session.run(None, {"input": x})[0].shape == (4, 1)
    assert np.isfinite(report["variant"]["ms_b1"])


def test_a_model_that_writes_text_is_refused_with_the_reason(workspace):
    text = prepare_builtin("tales")
    run = create_run(build("lstm_lm", text.meta), {"epochs": 1}, text.path)
    execute(run)
    with pytest.raises(LayerLabError, match="classifiers, regressors and forecasters"):
        compare(run)
