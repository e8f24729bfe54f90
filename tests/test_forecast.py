"""Time-series forecasting: series split by time into windows, a forecaster that beats the naive forecasts on a
seasonal series, forecasts from a history (engine, CLI, bundle), and the mistakes that get a clear message."""

import json

import numpy as np
import pandas as pd
import pytest

from engine.data.builtin import _traffic
from engine.data.prepare import prepare_builtin
from engine.data.series import SeriesOptions, prepare_series, suggest_time_column
from engine.errors import DataError, LayerLabError
from engine.evaluate import evaluate_run
from engine.linter import lint
from engine.predict import load_predictor, predict_table
from engine.runs import create_run, execute, validate
from engine.templates import build, starter_for
from tests.test_bundle import run_isolated, unzip
from tests.test_cli import run_cli


def series_frame(n=1200, seed=0) -> pd.DataFrame:
    return _traffic(n, 0.1, np.random.default_rng(seed))


def test_windows_are_split_by_time_and_the_row_order_of_the_file_does_not_matter(workspace):
    frame = series_frame()
    options = SeriesOptions(target="vehicles", time_column="time", window=24, horizon=6, stride=2)
    ds = prepare_series(frame, options, name="t", source="test")
    shuffled = prepare_series(
        frame.sample(frac=1, random_state=1), options, name="t", source="test"
    )
    for key, tensor in ds.tensors.items():  # sorted by its time column, the same series
        assert tensor.equal(shuffled.tensors[key]), key
    prep = ds.meta["preprocessing"]
    origins = prep["origins"]
    n_train, n_val = (ds.meta["sizes"][s] for s in ("train", "val"))
    # the last training forecast ends before validation's first starts; no window is shuffled across
    assert origins["train"] + (n_train - 1) * 2 + 6 <= origins["val"]
    assert origins["val"] + (n_val - 1) * 2 + 6 <= origins["test"]
    assert ds.meta["input_shape"] == [24, 1] and ds.tensors["y_train"].shape[1] == 6
    # the target is scaled by its training part alone, and each window's next values are its targets, both
    # relative to the window's last value
    values = (frame["vehicles"].to_numpy() - prep["mean"][0]) / prep["std"][0]
    at = origins["val"]
    assert np.allclose(
        ds.tensors["x_val"][0, :, 0], values[at - 24 : at] - values[at - 1], atol=1e-5
    )
    assert np.allclose(ds.tensors["y_val"][0], values[at : at + 6] - values[at - 1], atol=1e-5)
    assert prep["freq"] == "h" and prep["step"] == 3600


def test_a_trend_beyond_the_training_levels_is_forecast_from_changes(workspace):
    """A rising series (like CO2): its test part lies above every level the training part saw. Relative windows
    (the default) learn the changes and beat the naive forecast; absolute ones fall behind the trend."""
    t = np.arange(1500)
    rise = pd.DataFrame(
        {
            "level": 0.05 * t
            + 3 * np.sin(2 * np.pi * t / 52)
            + np.random.default_rng(0).normal(0, 0.3, 1500)
        }
    )
    ratios = {}
    for relative in (True, False):
        ds = prepare_series(
            rise,
            SeriesOptions(target="level", window=60, horizon=8, relative=relative),
            name="r",
            source="t",
        )
        run = create_run(build("window_mlp", ds.meta), {"epochs": 40, "lr": 0.003}, ds.path)
        execute(run)
        ratios[relative] = evaluate_run(run)["ratios"]["naive"]["mae"]
    assert ratios[True] < 0.8 and ratios[True] < ratios[False], ratios


def test_gaps_are_filled_unreadable_times_dropped_and_said(workspace):
    frame = series_frame(600).astype({"time": str})
    frame.loc[[10, 11, 300], "vehicles"] = np.nan
    frame.loc[5, "time"] = "not a date"
    ds = prepare_series(
        frame,
        SeriesOptions(target="vehicles", time_column="time", window=12, horizon=3),
        name="g",
        source="t",
    )
    notes = " ".join(ds.meta["notices"])
    assert (
        "1 row(s) whose time could not be read" in notes
        and "3 missing value(s) were filled" in notes
    )
    assert not any(t.isnan().any() for t in ds.tensors.values())
    assert suggest_time_column(frame) == "time"
    assert suggest_time_column(pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})) is None


@pytest.mark.parametrize(
    "options, message",
    [
        ({"window": 400, "horizon": 24}, "too few for a window of 400"),
        ({"window": 12, "horizon": 24, "season": 24}, "needs a window of at least 24"),
        ({"time_column": "vehicles"}, "is the time column"),
        ({"covariates": ["nope"]}, "has no column 'nope'"),
        ({"window": 1}, "window: Input should be greater than or equal to 2"),
    ],
)
def test_a_series_that_cannot_be_windowed_says_what_to_change(workspace, options, message):
    with pytest.raises(DataError, match=message):
        prepare_series(
            series_frame(500),
            SeriesOptions.parse({"target": "vehicles", "time_column": "time", **options}),
            name="bad",
            source="t",
        )


def test_a_time_column_of_text_that_is_not_dates_is_refused(workspace):
    frame = series_frame(300)
    frame["time"] = [f"row {i}" for i in range(len(frame))]
    with pytest.raises(DataError, match="holds neither dates nor numbers"):
        prepare_series(
            frame, SeriesOptions(target="vehicles", time_column="time"), name="b", source="t"
        )


def test_the_proposed_forecaster_beats_the_naive_and_seasonal_naive_forecasts(workspace):
    ds = prepare_builtin("traffic", n_samples=2000, noise=0.1)
    run = create_run(starter_for(ds.meta), {"epochs": 15, "lr": 0.003}, ds.path)
    finished = execute(run)
    assert finished["status"] == "completed"
    metrics = finished["metrics"]
    assert metrics["val/mae"] < 0.5 * metrics["val/naive_mae"], metrics  # in the series' units
    report = evaluate_run(run)
    assert report["task"] == "forecast" and len(report["by_step"]) == 12
    assert report["ratios"]["naive"]["mae"] < 0.5, report["ratios"]
    assert report["ratios"]["seasonal_naive"]["mae"] < 0.95, report["ratios"]
    # the baselines are what their names say, computed from the test windows
    x, y = (t.numpy() for t in ds.split("test"))
    scale, shift = (
        ds.meta["preprocessing"]["target"]["scale"],
        ds.meta["preprocessing"]["target"]["mean"],
    )
    naive = np.abs(x[:, -1:, 0] - y).mean() * scale
    assert report["baselines"]["naive"]["mae"] == pytest.approx(naive, rel=1e-4)
    season = (
        np.abs(x[:, 24:36, 0] - y).mean() * scale
    )  # window 48, season 24: the day before each hour ahead
    assert report["baselines"]["seasonal_naive"]["mae"] == pytest.approx(season, rel=1e-4)
    assert shift != 0 and report["plot"]["forecasts"]

    # A forecast from a new history: the next 12 hours, timed after its last row, in vehicles.
    history = series_frame(2100, seed=4).iloc[-100:]
    model, meta = load_predictor(run)
    table = predict_table(model, meta, history)
    assert list(table.columns) == ["step", "time", "vehicles (forecast)"] and len(table) == 12
    assert table["time"].iloc[0] == history["time"].iloc[-1] + pd.Timedelta("1h")
    assert 0 < table["vehicles (forecast)"].mean() < 2000
    with pytest.raises(LayerLabError, match="reads the last 48 steps of history.*has 20"):
        predict_table(model, meta, history.iloc[-20:])
    with pytest.raises(LayerLabError, match="the history has no column 'vehicles'"):
        predict_table(model, meta, history.drop(columns="vehicles"))


def test_the_linter_catches_a_forecaster_whose_output_is_not_its_horizon(workspace):
    ds = prepare_builtin("traffic", n_samples=600)
    spec = build("window_mlp", ds.meta)
    spec["nodes"][-1]["params"]["out_features"] = 1
    with pytest.raises(LayerLabError, match="a forecast of 12 steps needs one output per step"):
        validate(spec, {}, ds.meta)
    (finding,) = [f for f in lint(spec, ds.meta, {}) if f.rule == "output_width"]
    assert "one output per step of the forecast's horizon" in finding.message
    fixed, train = finding.fix(spec, {})
    validate(fixed, train, ds.meta)  # the fix makes it trainable


def test_forecasting_from_the_command_line_and_the_bundle(tmp_path):
    frame = series_frame(1500, seed=2)
    frame.to_csv(tmp_path / "series.csv", index=False)
    frame.iloc[-80:].to_csv(tmp_path / "history.csv", index=False)
    args = ["--data", tmp_path / "series.csv", "--target", "vehicles", "--out", tmp_path / "run"]
    refused = run_cli("train", *args, "--window", "24")
    assert (
        refused.returncode == 2
        and "--window is for --task forecast: add --task forecast" in refused.stderr
    )
    proc = run_cli(
        "train", *args, "--task", "forecast", "--time-column", "time", "--window", "24", "--horizon", "6",
        "--season", "24", "--covariate", "temperature", "--epochs", "3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    finished = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"val/mae", "val/naive_mae"} <= set(finished["metrics"])
    out = tmp_path / "forecast.csv"
    proc = run_cli(
        "predict", "--model", tmp_path / "run", "--data", tmp_path / "history.csv", "--out", out
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    forecast = pd.read_csv(out)
    assert len(forecast) == 6 and forecast["step"].tolist() == [1, 2, 3, 4, 5, 6]
    proc = run_cli("export", tmp_path / "run", "--format", "bundle", "--out", tmp_path / "b.zip")
    assert proc.returncode == 0, proc.stderr[-2000:]
    unzip((tmp_path / "b.zip").read_bytes(), tmp_path / "bundle")
    run_isolated(
        tmp_path / "bundle", "predict.py", tmp_path / "history.csv", "--out", tmp_path / "p.csv"
    )
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "p.csv"), forecast, rtol=1e-5)
    short = tmp_path / "short.csv"
    frame.iloc[-5:].to_csv(short, index=False)
    failed = run_isolated(tmp_path / "bundle", "predict.py", short, returncode=2)
    assert "give it at least 24" in failed.stderr


def test_a_too_short_series_is_refused_at_once_and_counted_like_its_windows():
    """The shortest length a refusal names is searched up to 2**30 steps: counted, never listed (listing them made
    one refusal of a window of 400 allocate gigabytes)."""
    from engine.data.series import _ranges, _short_part, _shortest, windows

    for n, window, horizon, stride in [
        (500, 400, 24, 1),
        (97, 12, 3, 2),
        (10, 2, 1, 3),
        (2000, 48, 24, 5),
    ]:
        options = SeriesOptions(
            target="vehicles", time_column="time", window=window, horizon=horizon, stride=stride
        )
        listed = windows(n, window, horizon, stride)
        assert set(listed) == set(_ranges(n, window, horizon))
        empty = [s for s in ("train", "val", "test") if not len(listed[s])]
        assert _short_part(n, options) == (
            empty[0] if empty else "train" if len(listed["train"]) < 8 else None
        )
    shortest = _shortest(SeriesOptions(target="vehicles", time_column="time", window=400))
    assert (
        _short_part(shortest, SeriesOptions(target="vehicles", time_column="time", window=400))
        is None
    )
    assert _short_part(
        shortest - 1, SeriesOptions(target="vehicles", time_column="time", window=400)
    )
