"""A GAN all the way through the browser: on the ring of Gaussians, load the GAN template, switch between its
generator and its discriminator, train it while its generated points change, evaluate the modes it covers, and
generate points on the Predict page."""

from playwright.sync_api import expect

from engine.data.prepare import prepare_builtin
from engine.templates import starter_for
from tests.browser.conftest import (
    live_changes,
    no_exceptions,
    open_page,
    settle,
    shot,
    stop_and_wait,
    use_template,
    visit,
)

LIVE = "Generated from fixed noise"


def live_caption(page) -> str:
    """The live samples' title (its epoch and step), "" before the first."""
    title = page.locator(".gtitle", has_text=LIVE)
    return title.first.text_content() if title.count() else ""


def test_a_gan_trains_live_evaluates_and_generates(server, page):
    dataset = prepare_builtin("rings")
    visit(server, page, dataset, starter_for(dataset.meta), None, "Build")
    use_template(page, "GAN")
    expect(page.get_by_text("noise (8,) → generator → sample (2,)")).to_be_visible()
    expect(page.locator(".ll-node", has_text="Dense")).to_have_count(
        3
    )  # the generator's three Dense layers
    page.locator('[data-testid="stButtonGroup"]').get_by_text("Discriminator", exact=True).click()
    settle(page)
    expect(page.locator(".ll-node", has_text="Activation")).to_have_count(2)
    expect(page.locator(".ll-node", has_text="leaky_relu")).to_have_count(2)
    no_exceptions(page)
    shot(page, "gan-1-build")

    open_page(page, "Train")
    expect(page.get_by_text("A GAN: each batch")).to_be_visible()
    run, captions = live_changes(page, 3000, live_caption)
    assert len(captions) >= 2, captions  # the generated points were redrawn while it trained
    page.locator(".gtitle", has_text="Discriminator and generator per epoch").first.wait_for()
    stop_and_wait(page, run["path"])
    page.get_by_text("Run stopped").first.wait_for(timeout=60_000)
    no_exceptions(page)
    shot(page, "gan-2-train")

    open_page(page, "Evaluate")
    expect(page.locator('[data-testid="stMetric"]', has_text="Modes covered")).to_be_visible()
    page.locator(".gtitle", has_text="generated points over the test split").first.wait_for()
    no_exceptions(page)
    shot(page, "gan-3-evaluate")

    open_page(page, "Predict")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("16 samples, seed 0.").wait_for()
    expect(page.get_by_role("button", name="Download the samples (CSV)")).to_be_visible()
    no_exceptions(page)
    shot(page, "gan-4-predict")
