"""Seeing why, as a user does it: the will-it-learn check finds a broken model and its fix mends it; the X-ray's
values change while the run trains; an image prediction is explained with its overlay. One server for all three."""

import copy
import re

from engine.data.prepare import prepare_builtin
from engine.runs import request_stop
from tests.browser.conftest import (
    live_changes,
    no_exceptions,
    open_page,
    settle,
    shot,
    trained_starter,
    use_session,
)
from tests.conftest import mlp_spec


def _xray_caption(page) -> str:
    """The X-ray's values in words under the small diagram (opening More charts once the run shows it)."""
    details = page.locator('[data-testid="stExpander"] details').filter(has_text="More charts")
    if details.count() and details.first.get_attribute("open") is None:
        details.first.locator("summary").click()
        return ""
    caption = page.locator('[data-testid="stCaptionContainer"]').filter(has_text="X-ray at step")
    return caption.first.inner_text() if caption.count() else ""


def test_check_and_fix_a_broken_model_watch_the_xray_and_explain_an_image(server, page, tmp_path):
    digits, _, digits_run = trained_starter("digits", "digits cnn", epochs=1)
    moons = prepare_builtin("moons", n_samples=1000)
    broken = copy.deepcopy(mlp_spec(2))
    broken["nodes"].insert(
        2, {"id": "aside", "op": "linear", "params": {"out_features": 8}, "inputs": ["act1"]}
    )
    broken["nodes"][3]["inputs"] = ["act1"]  # fc2 reads act1: 'aside' leads nowhere
    use_session(server, moons, broken, None, epochs=2000, lr=0.01)
    page.goto(server.url)
    settle(page)
    open_page(page, "Train")

    # The quick checks run by themselves: one fails, with its fix; then the whole check with its button.
    fix = page.get_by_role("button", name="Remove aside")
    fix.wait_for(timeout=120_000)
    assert page.get_by_text("3 of 4 quick checks passed").count() == 1
    assert page.get_by_text("'aside' gets no gradient at all").first.is_visible()
    shot(page, "will_it_learn_failed")
    fix.click()
    page.get_by_text("All 4 quick checks passed").wait_for(timeout=120_000)
    assert page.get_by_role("button", name="Remove aside").count() == 0
    page.get_by_role("button", name="Will it learn?").click()
    page.get_by_text("All 5 checks passed").wait_for(timeout=120_000)
    no_exceptions(page)

    # The X-ray of the run: its values (the colours' source) change as it trains.
    run, seen = live_changes(page, 2000, _xray_caption)
    request_stop(run["path"])  # seen enough: the rest of the run is not needed
    assert len(seen) >= 2, seen
    steps = sorted(
        int(text.split("X-ray at step ")[1].split(":")[0].replace(",", "")) for text in seen
    )
    assert steps[0] < steps[-1]
    shot(page, "xray_train")
    no_exceptions(page)

    # Explain an image prediction on the Predict page.
    open_page(page, "Predict")
    page.get_by_role("combobox", name="Run").click()
    page.get_by_role("option").filter(has_text="digits cnn").first.click()
    settle(page)
    from PIL import Image

    x = digits.split("test")[0][:2]
    files = []
    for i, img in enumerate(x):
        path = tmp_path / f"digit{i}.png"
        pixels = img[0].float().numpy()
        Image.fromarray((pixels * (255 if pixels.max() <= 1 else 1)).astype("uint8")).save(path)
        files.append(str(path))
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(files)
    page.get_by_text("2 prediction(s).").wait_for(timeout=60_000)
    page.get_by_text("Explain a prediction").click()
    overlay = page.locator('[data-testid="stImage"]').filter(
        has_text=re.compile("Grad-CAM|Integrated Gradients")
    )
    overlay.wait_for(timeout=60_000)
    assert overlay.locator("img").first.evaluate("i => i.naturalWidth") >= 224
    assert page.get_by_text("Explaining").count() == 1
    shot(page, "predict_explained")
    no_exceptions(page)
