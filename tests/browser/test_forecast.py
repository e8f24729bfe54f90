"""A time series all the way through the browser: upload it and prepare it for forecasting, build a forecaster from
its template, train it while its live view moves, evaluate it against the naive forecast, forecast after a new
history on the Predict page, and run the bundle's predict.py outside LayerLab."""

import re

import numpy as np
import pandas as pd
from playwright.sync_api import expect

from engine.data.builtin import _traffic
from engine.data.readers import read_table
from engine.portable import csv_bytes
from engine.predict import load_predictor, predict_table
from engine.runs import list_runs, read_status
from tests.browser.conftest import (
    choose,
    download_bundle,
    no_exceptions,
    open_page,
    settle,
    shot,
    start_training,
    use_template,
    wait_until,
)
from tests.browser.test_first_hour import LIVE, set_number
from tests.browser.test_text_and_numbers import same_predictions
from tests.browser.test_upload import upload
from tests.test_bundle import run_isolated


def test_a_series_is_forecast_from_a_template_and_beats_the_naive_forecast(server, page, tmp_path):
    series = _traffic(2400, 0.1, np.random.default_rng(5))
    path = tmp_path / "road traffic.csv"
    series.to_csv(path, index=False)
    history = tmp_path / "history.csv"
    _traffic(2600, 0.1, np.random.default_rng(6)).iloc[-120:].to_csv(history, index=False)

    upload(server, page, path)
    expect(page.get_by_text("2,400 rows × 3 columns")).to_be_visible()
    choose(page, "Target column (what to predict)", "vehicles")
    page.get_by_role("radiogroup", name="Task").get_by_text("forecast (time series)").click()
    settle(page)
    expect(page.get_by_role("button", name="Prepare series")).to_be_visible()
    # the time column is found by itself; the window, horizon and season are the user's
    expect(page.get_by_role("combobox", name="Time column")).to_have_value("time")
    set_number(page, "Window", 48)
    set_number(page, "Horizon", 12)
    set_number(page, "Season (steps)", 24)
    page.get_by_role("button", name="Prepare series").click()
    settle(page)
    expect(page.get_by_text("In use: road traffic")).to_be_visible()
    expect(page.get_by_text("Forecasting · input shape (48, 1)")).to_be_visible()
    no_exceptions(page)
    shot(page, "forecast-1-data")

    open_page(page, "Build")
    expect(page.get_by_text("a time series: an LSTM reads each window")).to_be_visible()
    use_template(page, "GRU forecaster")
    expect(page.locator(".ll-node", has_text="GRU")).to_be_visible()
    no_exceptions(page)
    shot(page, "forecast-2-build")

    # Train: the live label counts epochs while the run trains (its state moves), then the run completes.
    open_page(page, "Train")
    before = {r["id"] for r in list_runs()}
    start_training(page, 300)
    run = wait_until(lambda: next((r for r in list_runs() if r["id"] not in before), None))
    seen = set()
    while read_status(run["path"])["state"] in ("queued", "running") and len(seen) < 2:
        label = page.evaluate(LIVE)["label"]
        if done := re.search(r"(\d+)/300 epochs done", label):
            seen.add(done.group(1))
        page.wait_for_timeout(200)
    assert len(seen) >= 2, seen  # it moved while we watched
    wait_until(lambda: read_status(run["path"])["state"] not in ("queued", "running"), 240)
    page.get_by_text("Run completed").first.wait_for(timeout=120_000)
    no_exceptions(page)
    shot(page, "forecast-3-train")

    open_page(page, "Evaluate")
    page.get_by_text("windows of the test split").wait_for()
    ratio = page.locator('[data-testid="stMetric"]', has_text="MAE").first.locator(
        '[data-testid="stMetricDelta"]'
    )
    assert float(ratio.inner_text().split("×")[0]) < 0.8, ratio.inner_text()
    expect(page.get_by_text("Forecasts over the actual series")).to_be_visible()
    no_exceptions(page)
    shot(page, "forecast-4-evaluate")

    # Predict: the next 12 hours after a new history, as the engine forecasts them.
    model, meta = load_predictor(run["path"])
    expected = csv_bytes(
        predict_table(model, meta, read_table(history.read_bytes(), history.name).frame)
    )
    open_page(page, "Predict")
    page.locator('[data-testid="stFileUploader"]', has_text="History").locator(
        'input[type="file"]'
    ).set_input_files(str(history))
    page.get_by_text("The next 12 step(s) of vehicles").wait_for()
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download the forecast (CSV)").click()
    dl.value.save_as(tmp_path / "got.csv")
    same_predictions(tmp_path / "got.csv", expected)
    got = pd.read_csv(tmp_path / "got.csv")
    assert got["time"].iloc[0] == str(
        pd.Timestamp(pd.read_csv(history)["time"].iloc[-1]) + pd.Timedelta("1h")
    )
    no_exceptions(page)
    shot(page, "forecast-5-predict")

    # The bundle's predict.py, with LayerLab unimportable, forecasts the same from the same history.
    open_page(page, "Export")
    download_bundle(page, tmp_path / "bundle")
    run_isolated(tmp_path / "bundle", "predict.py", history, "--out", tmp_path / "p.csv")
    same_predictions(tmp_path / "p.csv", expected)
    no_exceptions(page)
