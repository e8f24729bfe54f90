"""GANs: a generator and a discriminator in one spec, trained in alternation. On a ring of eight Gaussians the
generated points cover most modes (measured); the CLI trains one (--task gan) and writes samples (CSV for points,
PNG for images); the mistakes get a clear message."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from engine.bundle import bundle_bytes
from engine.data.prepare import prepare_builtin
from engine.errors import ConfigError, SpecError
from engine.evaluate import evaluate_run
from engine.gan import SAMPLES_FILE, GanCoach, coverage, gan_train, starter_gan
from engine.linter import lint_gan_part
from engine.runs import create_run, execute, validate
from tests.test_bundle import run_isolated, unzip
from tests.test_cli import cli_here, run_cli


def test_coverage_counts_the_modes_the_points_fall_in():
    centres, spread = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]]), np.full(4, 0.1)
    rng = np.random.default_rng(0)
    everywhere = centres[rng.integers(0, 4, 400)] + rng.normal(0, 0.1, (400, 2))
    assert coverage(everywhere, centres, spread) == pytest.approx(
        {"modes_covered": 1.0, "quality": 1.0}, abs=0.02
    )
    collapsed = centres[[1] * 400] + rng.normal(0, 0.1, (400, 2))
    assert coverage(collapsed, centres, spread)["modes_covered"] == 0.25
    between = rng.uniform(1, 4, (400, 2))  # far from every mode
    assert coverage(between, centres, spread)["quality"] == 0.0


def test_the_coach_says_when_the_discriminator_wins_and_when_the_modes_collapse():
    coach = GanCoach()
    winning = {"val/d_real_accuracy": 0.99, "val/d_fake_accuracy": 1.0, "val/spread_ratio": 0.9}
    assert coach.look(winning) == [] and coach.look(winning) == []  # two epochs: not yet
    (said,) = coach.look(winning)
    assert said[0] == "discriminator_wins" and "learning rate" in said[1]
    assert coach.look(winning) == []  # said once
    balanced = {"val/d_real_accuracy": 0.6, "val/d_fake_accuracy": 0.55, "val/spread_ratio": 1.0}
    assert GanCoach().look(balanced) == []
    (said,) = GanCoach().look({**balanced, "val/spread_ratio": 0.1})
    assert said[0] == "mode_collapse" and "vary 10%" in said[1]
    (said,) = GanCoach().look({**balanced, "val/modes_covered": 0.25})
    assert said[0] == "mode_collapse" and "covers 25% of the data's modes" in said[1]


def test_a_gan_covers_most_modes_of_a_ring_of_gaussians(workspace):
    ds = prepare_builtin("rings")
    run = create_run(starter_gan(ds.meta), gan_train(ds.meta), ds.path)
    final = execute(run)
    assert final["status"] == "completed"
    metrics = final["metrics"]
    assert {"val/d_loss", "val/g_loss", "val/d_real_accuracy", "val/d_fake_accuracy"} <= set(
        metrics
    )
    assert metrics["val/modes_covered"] >= 0.75 and metrics["val/quality"] >= 0.5, metrics
    # neither network wins outright: the discriminator is unsure of the generated points
    assert metrics["val/d_fake_accuracy"] < 0.9
    report = evaluate_run(run)
    assert report["summary"]["modes_covered"] >= 0.75 and len(report["points"]["generated"]) == 1000
    shown = json.loads((run / SAMPLES_FILE).read_text())
    assert len(shown["x"]) == 1000 and not shown["image"]


def test_gan_mistakes_are_refused_with_the_fix(workspace):
    ds = prepare_builtin("rings")
    spec = starter_gan(ds.meta)
    with pytest.raises(ConfigError, match="--task gan"):
        validate(spec, {}, ds.meta)
    squashed = json.loads(json.dumps(spec))
    squashed["discriminator"]["nodes"].append(
        {"id": "sig", "op": "activation", "params": {"kind": "sigmoid"}}
    )
    with pytest.raises(SpecError, match="remove the sigmoid"):
        validate(squashed, {"target": "gan"}, ds.meta)
    wide = json.loads(json.dumps(spec))
    wide["generator"]["nodes"][-1]["params"]["out_features"] = 3
    with pytest.raises(SpecError, match="end it with a Dense layer of 2 units"):
        validate(wide, {"target": "gan"}, ds.meta)


def test_the_linter_knows_a_gan_s_mistakes_and_fixes_them(workspace):
    ds = prepare_builtin("digits")
    spec = starter_gan(ds.meta)
    assert lint_gan_part("generator", spec["generator"], ds.meta) == []
    assert lint_gan_part("discriminator", spec["discriminator"], ds.meta) == []
    squashed = {**spec["discriminator"], "nodes": [*spec["discriminator"]["nodes"],
                {"id": "sig", "op": "activation", "params": {"kind": "sigmoid"}}]}  # fmt: skip
    (finding,) = lint_gan_part("discriminator", squashed, ds.meta)
    assert finding.rule == "discriminator_sigmoid"
    assert finding.fix(squashed, {})[0]["nodes"][-1]["id"] == "d_out"
    bare = {**spec["generator"], "nodes": spec["generator"]["nodes"][:-1]}
    (finding,) = lint_gan_part("generator", bare, ds.meta)
    fixed = finding.fix(bare, {})[0]
    assert fixed["nodes"][-1]["params"]["kind"] == "sigmoid"
    validate({**spec, "generator": fixed}, {"target": "gan"}, ds.meta)


@pytest.fixture
def ring_csv(tmp_path):
    rng = np.random.default_rng(0)
    mode = rng.integers(0, 8, 1500)
    angle = mode * 2 * np.pi / 8
    path = tmp_path / "ring.csv"
    pd.DataFrame(
        {
            "x": 20 + 2 * np.cos(angle) + rng.normal(0, 0.05, 1500),
            "y": 2 * np.sin(angle) + rng.normal(0, 0.05, 1500),
            "mode": mode,
        }  # fmt: skip
    ).to_csv(path, index=False)
    return path


def test_cli_trains_a_gan_and_writes_points_in_the_data_units(workspace, ring_csv, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "--data", ring_csv, "--target", "mode", "--task", "gan", "--epochs", "60",
                   "--batch-size", "64", "--d-steps", "1", "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["type"] == "run_finished" and {"val/d_loss", "val/g_loss"} <= set(final["metrics"])
    proc = run_cli("generate", out, "--n", "200", "--out", tmp_path / "points")
    assert proc.returncode == 0, proc.stderr
    points = pd.read_csv(tmp_path / "points" / "samples.csv")
    assert list(points.columns) == ["x", "y"] and len(points) == 200
    assert 17 < points["x"].median() < 23  # in the data's units (the ring is centred at x = 20)
    # the bundle: the generator alone, and a generate.py that runs without LayerLab
    unzip(bundle_bytes(out), tmp_path / "bundle")
    run_isolated(tmp_path / "bundle", "generate.py", "--n", "9", "--out", "made")
    assert len(pd.read_csv(tmp_path / "bundle" / "made" / "samples.csv")) == 9


def test_cli_gan_of_images_writes_pngs_and_refuses_its_flags_elsewhere(
    workspace, capsys, ring_csv, tmp_path
):
    ds = prepare_builtin("digits")
    run = create_run(starter_gan(ds.meta), {**gan_train(ds.meta), "epochs": 2}, ds.path)
    execute(run)
    # the quality figure: a classifier of the real digits is sure of them and sees every class; two epochs of
    # a GAN make blurs it is far less sure of
    judged = evaluate_run(run)["judged"]
    assert judged["real"]["confidence"] > 0.7 and judged["real"]["classes_covered"] == 1.0
    assert judged["generated"]["confidence"] < judged["real"]["confidence"]
    code, err = cli_here(capsys, "generate", run, "--n", "3", "--out", tmp_path / "png")
    assert code == 0, err
    pictures = sorted((tmp_path / "png").glob("*.png"))
    assert len(pictures) == 3 and Image.open(pictures[0]).size == (8, 8)
    code, err = cli_here(capsys, "train", "--data", ring_csv, "--target", "mode", "--d-steps", "2", "--out",
                         tmp_path / "r")  # fmt: skip
    assert code == 2 and "--d-steps is for --task gan" in err
