"""A new user's first hour (issue 12): a refused Start, two tabs, a killed worker, a diverging run, live labels that
agree with the cards, and every page at 800 px wide."""

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from engine.runs import list_runs, read_status, runs_dir
from engine.workspace import read_json
from tests.browser.conftest import (
    no_exceptions,
    settle,
    shot,
    stop_and_wait,
    trained_starter,
    use_session,
    wait_until,
)

PAGES = ["data", "build", "train", "evaluate", "predict", "export"]


def set_number(page, label: str, value) -> None:
    field = page.locator(f'input[aria-label="{label}"]')
    field.fill(str(value))
    field.press("Enter")
    settle(page)


def session_of(page) -> str:
    return re.search(r"[?&]s=([0-9a-f]+)", page.url).group(1)


def new_run_id(before: set) -> str:
    return wait_until(lambda: next((r["id"] for r in list_runs() if r["id"] not in before), None))


def start_run(server, page, **numbers) -> Path:
    """On a fresh Train page: set these fields (label: value), press Start and return the new run's folder."""
    page.goto(f"{server.url}/train")
    settle(page)
    for label, value in numbers.items():
        set_number(page, label.replace("_", " ").capitalize(), value)
    before = {r["id"] for r in list_runs()}
    page.get_by_role("button", name="Start training").click()
    return runs_dir() / new_run_id(before)


def test_a_refused_start_says_why_and_keeps_the_page(server, page):
    dataset, spec, run = trained_starter("moons", "earlier run", epochs=2)
    use_session(server, dataset, spec, run.name)
    page.goto(f"{server.url}/train")
    settle(page)
    start = page.get_by_role("button", name="Start training")
    assert start.is_enabled()
    set_number(page, "Learning rate", 0)
    refused = page.locator('[data-testid="stAlertContentError"]', has_text="Can't start yet")
    refused.wait_for()
    assert start.is_disabled()
    assert "greater than 0" in refused.inner_text()
    page.get_by_text("earlier run").first.wait_for()  # the run list is still there
    no_exceptions(page)
    shot(page, "first-hour-refused-start")
    set_number(page, "Learning rate", 0.001)
    refused.wait_for(state="detached")
    assert start.is_enabled()
    # a wide window keeps the sidebar open (only narrow ones fold it)
    assert page.locator('[data-testid="stSidebar"]').get_attribute("data-collapsed") == "false"


def test_two_tabs_keep_their_own_runs_and_settings_after_a_refresh(server, page, context):
    page.goto(f"{server.url}/train")
    settle(page)
    a = session_of(page)
    tab_b = context.new_page()
    tab_b.goto(f"{server.url}/train")
    settle(tab_b)
    b = session_of(tab_b)
    assert a != b  # a new tab gets its own session, started from the latest work
    set_number(tab_b, "Epochs", 3000)
    before = {r["id"] for r in list_runs()}
    tab_b.get_by_role("button", name="Start training").click()
    b_run = new_run_id(before)
    wait_until(lambda: read_status(runs_dir() / b_run)["state"] == "running")
    set_number(page, "Batch size", 64)  # tab A changes its settings meanwhile

    tab_b.reload()
    settle(tab_b)
    assert session_of(tab_b) == b
    name = next(r["name"] for r in list_runs() if r["id"] == b_run)
    tab_b.get_by_role(
        "heading", name=name
    ).wait_for()  # B still shows its own run, live, with its Stop
    assert tab_b.locator('input[aria-label="Batch size"]').input_value() == "32"
    tab_b.get_by_role("button", name="Stop").nth(
        1
    ).wait_for()  # the app-wide one and the run view's
    assert tab_b.get_by_role("button", name="Stop").count() == 2

    page.reload()
    settle(page)
    assert session_of(page) == a
    assert page.locator('input[aria-label="Batch size"]').input_value() == "64"
    page.get_by_text("No run in this session yet").wait_for()
    # The app-wide indicator shows B's run in A too, with a Stop that works.
    page.get_by_text(name).first.wait_for()
    shot(page, "first-hour-tab-a")
    stop_and_wait(page, runs_dir() / b_run)
    assert read_json(server.home / "sessions" / f"{a}.json")["ll.train"]["batch_size"] == 64
    assert read_json(server.home / "sessions" / f"{b}.json")["ll.train"]["batch_size"] == 32
    no_exceptions(page)
    no_exceptions(tab_b)


def test_a_killed_worker_is_shown_as_resumable_within_5_seconds(server, page):
    run = start_run(server, page, epochs=5000)
    wait_until(lambda: (run / "checkpoints" / "state.pt").exists())
    page.wait_for_timeout(
        13_000
    )  # past the quick first seconds: the charts now redraw every few seconds
    page.get_by_text("epochs done").first.wait_for()
    os.kill(read_json(run / "status.json")["pid"], signal.SIGKILL)
    killed = time.time()
    page.get_by_role("button", name="Resume").wait_for(timeout=5_000)
    seen = time.time() - killed
    assert page.get_by_text("stopped unexpectedly").count() >= 1
    assert "Resume continues" in page.get_by_text("stopped unexpectedly").first.inner_text()
    shot(page, "first-hour-killed-worker")
    assert seen < 5
    page.get_by_role("button", name="Resume").click()
    wait_until(lambda: read_status(run)["state"] == "running", timeout=30)
    stop_and_wait(page, run)
    no_exceptions(page)


LIVE = """() => {
  const text = (sel) => Array.from(document.querySelectorAll(sel)).map(e => e.innerText);
  const label = text('[data-testid="stProgress"]').join(' ');
  const cards = Array.from(document.querySelectorAll('[data-testid="stMetric"]'))
    .filter(m => m.innerText.includes('Epochs done'))
    .map(m => m.querySelector('[data-testid="stMetricValue"]').innerText);
  return {label, card: cards[0] || null};
}"""


def test_the_live_labels_agree_with_the_cards_and_a_huge_learning_rate_diverges(server, page):
    run = start_run(
        server, page, epochs=10000
    )  # far more than it trains while watched: it is stopped
    page.get_by_text("Starting the worker").or_(page.get_by_text("epochs done")).first.wait_for(
        timeout=30_000
    )
    samples = []
    strip = page.locator(
        '[data-testid="stColumn"]',
        has=page.locator('a[data-testid="stPageLink-NavLink"]', has_text="Run"),
    )
    while read_status(run)["state"] in ("queued", "running") and len(samples) < 12:
        seen = page.evaluate(LIVE)
        if (
            seen["card"] and seen["card"] not in seen["label"]
        ):  # caught in the middle of a redraw: look again
            page.wait_for_timeout(300)
            seen = page.evaluate(LIVE)
        if seen["card"]:
            samples.append(seen)
            done = re.search(r"(\d+)/10000 epochs done", seen["label"])
            assert done, seen  # a live run's label counts epochs, like the card
            assert f"{done.group(1)}/10000" == seen["card"], (
                seen
            )  # drawn from one snapshot: they agree
            # the status strip says "training", never "queued", beside live curves
            wait_until(
                lambda: (
                    "· training" in strip.inner_text() or read_status(run)["state"] != "running"
                ),
                3,
            )
            assert "queued" not in strip.inner_text()
        page.wait_for_timeout(400)
    assert len(samples) >= 3, samples
    assert len({s["card"] for s in samples}) >= 2  # it moved while we watched
    shot(page, "first-hour-live")
    stop_and_wait(page, run)
    no_exceptions(page)

    # The same server, a new run at a learning rate of a million: it ends as diverged, not "completed".
    run = start_run(server, page, learning_rate=1000000, epochs=50)
    page.get_by_text("Run diverged").wait_for(timeout=60_000)
    assert read_status(run)["state"] == "diverged"
    alert = page.locator(
        '[data-testid="stAlertContentError"]', has_text="Run diverged"
    ).inner_text()
    assert "learning rate, 1e+06, is most likely too high" in alert
    assert page.locator('[data-testid="stAlertContentSuccess"]').count() == 0
    assert page.get_by_text("relu instead").count() == 0
    shot(page, "first-hour-diverged")
    no_exceptions(page)


@pytest.fixture
def narrow(browser):
    context = browser.new_context(viewport={"width": 800, "height": 900})
    yield context.new_page()
    context.close()


OVERFLOW = """() => { let worst = 0;
  for (const el of document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"], html, body'))
    worst = Math.max(worst, el.scrollWidth - el.clientWidth);
  return worst; }"""


def test_every_page_fits_800_px_with_the_sidebar_folded(server, narrow):
    dataset, spec, run = trained_starter("moons", "narrow run", epochs=2)
    sid = use_session(server, dataset, spec, run.name)
    for name in PAGES:
        narrow.goto(f"{server.url}/{'' if name == 'data' else name}?s={sid}")
        settle(narrow)
        narrow.wait_for_function(
            """() => document.querySelector('[data-testid="stSidebar"]')
                                          ?.getAttribute('data-collapsed') === 'true'""",
            timeout=10_000,
        )
        assert narrow.evaluate(OVERFLOW) <= 1, name  # nothing scrolls sideways
        if name == "build":  # the stack and the form are stacked, each the full width
            assert narrow.locator(".ll-stack").bounding_box()["width"] > 300
        no_exceptions(narrow)
        shot(narrow, f"narrow-{name}")
    assert (
        json.loads((server.home / "sessions" / f"{sid}.json").read_text())["ll.run_id"] == run.name
    )
