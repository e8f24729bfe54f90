"""Evaluation metrics agree with scikit-learn's on the same predictions; a run evaluates from the app's engine
and from the command line."""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics

from engine.errors import LayerLabError
from engine.evaluate import (
    classification_metrics,
    evaluate_run,
    pr_curve,
    regression_metrics,
    roc_curve,
)
from engine.runs import create_run, execute
from tests.conftest import ROOT, mlp_spec


def random_probs(n: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]  # better than chance, with mistakes
    logits[::7] = logits[::7].round(1)  # repeated scores: ties must be handled as scikit-learn does
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


@pytest.mark.parametrize("k", [2, 4])
def test_classification_metrics_match_scikit_learn(k):
    y, probs = random_probs(500, k)
    report = classification_metrics(y, probs, [f"c{i}" for i in range(k)])
    pred = probs.argmax(1)
    assert report["summary"]["accuracy"] == pytest.approx(metrics.accuracy_score(y, pred))
    assert report["confusion"] == metrics.confusion_matrix(y, pred).tolist()
    p, r, f, s = metrics.precision_recall_fscore_support(y, pred, zero_division=0)
    assert [c["precision"] for c in report["per_class"]] == pytest.approx(p)
    assert [c["recall"] for c in report["per_class"]] == pytest.approx(r)
    assert [c["f1"] for c in report["per_class"]] == pytest.approx(f)
    assert [c["support"] for c in report["per_class"]] == s.tolist()
    for avg in ("macro", "weighted"):
        p, r, f, _ = metrics.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        assert (
            report["averages"][avg]["precision"],
            report["averages"][avg]["recall"],
            report["averages"][avg]["f1"],
        ) == pytest.approx((p, r, f))
    if k == 2:
        assert report["curves"][0]["roc_auc"] == pytest.approx(
            metrics.roc_auc_score(y, probs[:, 1])
        )
        assert report["curves"][0]["average_precision"] == pytest.approx(
            metrics.average_precision_score(y, probs[:, 1])
        )
    else:
        assert report["summary"]["roc_auc"] == pytest.approx(
            metrics.roc_auc_score(y, probs, multi_class="ovr")
        )
        for c, curve in enumerate(report["curves"]):
            assert curve["average_precision"] == pytest.approx(
                metrics.average_precision_score(y == c, probs[:, c])
            )
    wrong = report["misclassified"]
    assert len(wrong) == min(50, int((pred != y).sum()))
    assert all(a["confidence"] >= b["confidence"] for a, b in zip(wrong, wrong[1:], strict=False))
    assert all(w["true"] != w["predicted"] for w in wrong)


def test_roc_and_pr_points_match_scikit_learn():
    y, probs = random_probs(300, 2, seed=3)
    fpr, tpr, _ = roc_curve(y == 1, probs[:, 1])
    sk_fpr, sk_tpr, _ = metrics.roc_curve(y, probs[:, 1], drop_intermediate=False)
    assert fpr == pytest.approx(sk_fpr) and tpr == pytest.approx(sk_tpr)
    recall, precision, _ = pr_curve(y == 1, probs[:, 1])
    sk_precision, sk_recall, _ = metrics.precision_recall_curve(
        y, probs[:, 1], drop_intermediate=False
    )
    assert precision == pytest.approx(sk_precision[:-1][::-1]) and recall == pytest.approx(
        sk_recall[:-1][::-1]
    )


def test_regression_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    actual = rng.normal(50, 10, 400)
    predicted = actual + rng.normal(0, 3, 400)
    report = regression_metrics(actual, predicted)
    assert report["summary"]["mae"] == pytest.approx(metrics.mean_absolute_error(actual, predicted))
    assert report["summary"]["rmse"] == pytest.approx(
        np.sqrt(metrics.mean_squared_error(actual, predicted))
    )
    assert report["summary"]["r2"] == pytest.approx(metrics.r2_score(actual, predicted))
    assert abs(report["worst"][0]["error"]) == pytest.approx(np.abs(predicted - actual).max())


def test_a_run_evaluates_on_its_test_split_and_from_the_cli(moons):
    run = create_run(mlp_spec(2), {"epochs": 15, "lr": 0.01}, moons.path)
    execute(run)
    report = evaluate_run(run)
    assert report["split"] == "test" and report["n"] == moons.meta["sizes"]["test"]
    assert report["summary"]["accuracy"] >= 0.95 and report["summary"]["roc_auc"] >= 0.98
    assert sum(map(sum, report["confusion"])) == report["n"]
    out = subprocess.run(
        [sys.executable, "-m", "engine", "evaluate", str(run)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["summary"] == pytest.approx(report["summary"])
    assert printed["confusion"] == report["confusion"]


def test_regression_run_reports_in_the_targets_units(workspace):
    from engine.data.prepare import prepare_builtin

    diabetes = prepare_builtin("diabetes")
    run = create_run(mlp_spec(1), {"epochs": 30, "lr": 0.003}, diabetes.path)
    result = execute(run)
    report = evaluate_run(run, "val")
    assert report["task"] == "regression"
    assert report["summary"]["mae"] == pytest.approx(result["metrics"]["val/mae"], rel=1e-4)
    assert report["summary"]["r2"] == pytest.approx(result["metrics"]["val/r2"], abs=1e-4)
    assert 25 < np.mean(report["actual"]) < 300  # disease progression, not standardized values


def test_a_run_without_weights_is_explained(moons):
    run = create_run(mlp_spec(2), {"epochs": 1}, moons.path)
    with pytest.raises(LayerLabError, match="no trained weights yet"):
        evaluate_run(run)


def test_an_autoencoder_run_is_evaluated_as_a_reconstruction(moons):
    from engine.evaluate import evaluate_run
    from engine.templates import build

    run = create_run(build("autoencoder", moons.meta), {"epochs": 3, "target": "input"}, moons.path)
    assert execute(run)["status"] == "completed"
    report = evaluate_run(run)
    assert report["task"] == "reconstruction" and report["worst"] == []
    assert report["n"] == moons.meta["sizes"]["test"] * 2  # per value: two features a row
    assert report["summary"]["mae"] >= 0 and "r2" in report["summary"]
