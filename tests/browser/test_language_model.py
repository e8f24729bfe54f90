"""A text file all the way through the browser: upload it as a corpus, build a language model from its template,
train it while what it writes appears and changes, evaluate it against the unigram baseline, and write text from a
prompt on the Predict page, as the engine writes it."""

import re

import numpy as np
from playwright.sync_api import expect

from engine.data.builtin import _tales
from engine.predict import generate_text, load_predictor
from tests.browser.conftest import (
    live_changes,
    no_exceptions,
    open_page,
    settle,
    shot,
    stop_and_wait,
    use_template,
)
from tests.browser.test_upload import upload


def written(page) -> str:
    """The live text the run view shows now ("" before the first)."""
    caption = page.get_by_text("What it writes now")
    if not caption.count():
        return ""
    return page.locator('[data-testid="stCode"]').first.inner_text()


def test_a_text_file_trains_a_language_model_that_writes(server, page, tmp_path):
    path = tmp_path / "tales.txt"
    path.write_text(_tales(500, 0.0, np.random.default_rng(2)))

    upload(server, page, path)
    expect(page.get_by_role("radiogroup", name="Read it as")).to_be_visible()
    page.get_by_role("button", name="Prepare text").click()
    settle(page)
    expect(page.get_by_text("In use: tales")).to_be_visible()
    expect(page.get_by_text("Language model · input shape (64,)")).to_be_visible()
    no_exceptions(page)
    shot(page, "lm-1-data")

    open_page(page, "Build")
    expect(page.get_by_text("text to generate: a small causal transformer")).to_be_visible()
    use_template(page, "LSTM language model")
    expect(page.locator(".ll-node", has_text="LSTM")).to_be_visible()
    no_exceptions(page)
    shot(page, "lm-2-build")

    # Train: what the model writes appears while it trains and changes as it learns; then Stop keeps its weights.
    # The template stops early once the validation loss stalls (on a fast machine, before a second text): off here.
    open_page(page, "Train")
    page.locator(
        '[data-testid="stExpander"] summary', has_text="Schedule and early stopping"
    ).click()
    early = page.get_by_role("checkbox", name="Early stopping")
    expect(early).to_be_checked()
    page.get_by_text("Early stopping", exact=True).click()
    settle(page)
    expect(early).not_to_be_checked()
    run, texts = live_changes(page, 1000, written)
    assert len(texts) >= 2, texts
    stop_and_wait(page, run["path"])
    page.get_by_text("Run stopped").first.wait_for(timeout=60_000)
    no_exceptions(page)
    shot(page, "lm-3-train")

    open_page(page, "Evaluate")
    page.get_by_text("windows of the test split").wait_for()
    bits = page.locator('[data-testid="stMetric"]', has_text="Bits per token").locator(
        '[data-testid="stMetricDelta"]'
    )
    assert float(re.match(r"([\d.]+)×", bits.inner_text()).group(1)) < 0.5, bits.inner_text()
    no_exceptions(page)
    shot(page, "lm-4-evaluate")

    # Predict: a prompt, written on as the engine writes it (same seed).
    model, meta = load_predictor(run["path"])
    expected = generate_text(model, meta, "the cat ", length=60, temperature=0.8, top_k=20, seed=0)
    open_page(page, "Predict")
    page.get_by_role("textbox", name="Prompt").fill("the cat ")
    length = page.locator('input[aria-label="Length (tokens)"]')
    length.fill("60")
    length.press("Enter")
    settle(page)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("Generated").wait_for()
    assert (
        page.locator('[data-testid="stCode"]').last.inner_text().strip()
        == ("the cat " + expected).strip()
    )
    no_exceptions(page)
    shot(page, "lm-5-predict")
