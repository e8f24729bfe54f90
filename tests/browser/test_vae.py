"""A VAE all the way through the browser: build it from its template on the digits, train it while its live
reconstructions change, see the reconstruction and KL curves, evaluate it (samples, latent map, interpolation) and
generate new images on the Predict page."""

import zipfile

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

LIVE = "what the model rebuilds of them now"


def rebuilt_caption(page) -> str:
    """The live reconstructions' caption (its epoch and step), "" before the first."""
    caption = page.get_by_text(LIVE)
    return caption.first.inner_text() if caption.count() else ""


def test_a_vae_trains_live_evaluates_and_generates(server, page, tmp_path):
    dataset = prepare_builtin("digits")
    visit(server, page, dataset, starter_for(dataset.meta), None, "Build")
    use_template(page, "MLP VAE")
    expect(page.locator(".ll-node", has_text="Gaussian latent")).to_be_visible()
    no_exceptions(page)
    shot(page, "vae-1-build")

    open_page(page, "Train")
    expect(page.get_by_text("it trains as a variational autoencoder")).to_be_visible()
    expect(page.get_by_role("spinbutton", name="KL warm-up (epochs)")).to_have_value("5")
    run, captions = live_changes(page, 3000, rebuilt_caption)
    assert len(captions) >= 2, captions  # the reconstructions were redrawn while it trained
    page.get_by_text("Reconstruction and KL per epoch").first.wait_for()
    stop_and_wait(page, run["path"])
    page.get_by_text("Run stopped").first.wait_for(timeout=60_000)
    no_exceptions(page)
    shot(page, "vae-2-train")

    open_page(page, "Evaluate")
    page.get_by_text("New samples: codes drawn from the prior").wait_for()
    expect(page.locator('[data-testid="stMetric"]', has_text="KL per row")).to_be_visible()
    page.get_by_text("Latent map").first.wait_for()
    page.get_by_text("along the straight line between their codes").wait_for()
    no_exceptions(page)
    shot(page, "vae-3-evaluate")

    open_page(page, "Predict")
    page.get_by_role("spinbutton", name="Samples").fill("12")
    page.get_by_role("spinbutton", name="Samples").press("Enter")
    settle(page)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("12 samples, seed 0.").wait_for()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the samples (PNG files in a zip)").click()
    zipped = tmp_path / "samples.zip"
    download.value.save_as(zipped)
    with zipfile.ZipFile(zipped) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 12
    no_exceptions(page)
    shot(page, "vae-4-predict")
