"""The Tune page as a user drives it: a 2-setting search of 4 trials, its figures, then train the best; then the
Train page's learning-rate finder and cross-validation."""

from engine import search
from engine.data.prepare import prepare_builtin
from engine.runs import list_runs, read_status
from tests.browser.conftest import (
    new_run_finished,
    no_exceptions,
    open_page,
    settle,
    shot,
    use_session,
    wait_until,
)
from tests.conftest import mlp_spec


def test_search_four_trials_train_the_best_then_find_a_rate_and_cross_validate(server, page):
    dataset = prepare_builtin("moons", n_samples=600)
    use_session(server, dataset, mlp_spec(2), None, epochs=3, lr=0.01)
    page.goto(server.url)
    settle(page)
    open_page(page, "Tune")
    settings = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Settings to search")
    settings.wait_for(timeout=60_000)
    assert settings.get_by_text("Learning rate").count() == 1  # the two settings offered first
    assert settings.get_by_text("fc1: width").count() == 1
    trials = page.locator('input[aria-label="Trials"]')
    trials.fill("4")
    trials.press("Enter")
    settle(page)
    page.get_by_role("button", name="Start the search").click()
    study_dir = wait_until(lambda: next((s["dir"] for s in search.list_studies()), None))
    wait_until(lambda: search.state(study_dir) == "finished", timeout=240)
    tab = page.get_by_role("tab", name="Parallel coordinates")
    tab.wait_for(timeout=60_000)
    tab.click()
    chart = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Parallel Coordinate")
    chart.first.wait_for(timeout=30_000)
    rows = search.trial_rows(search.load(study_dir))
    assert (
        len(rows) == 4 and rows[0]["params"]["lr"] == 0.01
    )  # the first trial: the current settings
    assert page.get_by_text("4 of 4 trials finished").count() == 1
    shot(page, "tune_study")
    no_exceptions(page)
    page.reload()  # the study lives on disk: a refresh brings it back
    settle(page)
    page.get_by_text("4 of 4 trials finished (finished)").wait_for(timeout=60_000)
    before = {r["id"] for r in list_runs()}
    page.get_by_role("button", name="Train the best").click()
    run = new_run_finished(page, before)
    top = search.best(search.load(study_dir))
    assert run["name"].endswith(f"search · best (trial {top['number']})")
    assert read_status(run["path"])["state"] == "completed"
    no_exceptions(page)

    # Then, on the Train page where Train the best left us: the learning-rate finder and cross-validation (one
    # server for both: each fresh server costs the suite seconds).
    open_page(page, "Train")
    page.get_by_role("button", name="Find a learning rate").click()
    use = page.get_by_role("button", name="Use ")
    use.wait_for(timeout=120_000)
    suggested = float(use.inner_text().split()[-1])
    use.click()
    settle(page)
    assert float(page.locator('input[aria-label="Learning rate"]').input_value()) == suggested
    shot(page, "train_lr_finder")
    page.locator('[data-testid="stExpander"] summary', has_text="Advanced").click()
    folds = page.locator('input[aria-label="Cross-validation folds"]')
    folds.fill("2")
    folds.press("Enter")
    settle(page)
    before = {r["id"] for r in list_runs()}
    page.get_by_role("button", name="Start 2-fold cross-validation").click()
    wait_until(lambda: len([r for r in list_runs() if r["id"] not in before]) == 2)
    wait_until(
        lambda: all(read_status(r["path"])["state"] == "completed" for r in list_runs()
                    if r["id"] not in before), timeout=180,
    )  # fmt: skip
    page.get_by_role("heading", name="Cross-validation: 2 folds").wait_for(timeout=30_000)
    page.get_by_text("val/accuracy (mean ± std)").wait_for(timeout=60_000)
    shot(page, "train_cross_validation")
    no_exceptions(page)
