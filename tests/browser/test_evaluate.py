"""Evaluate in the browser: a finished run's test-split metrics, confusion matrix and curves."""

from engine.evaluate import evaluate_run
from engine.runs import create_run, execute
from engine.spec import starter_spec
from tests.browser.conftest import no_exceptions, settle, shot, trained_starter, visit

TITLES = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
  .map(p => (p.layout.title || {}).text || '')"""


def test_evaluate_a_run(server, page):
    dataset, spec, run = trained_starter("iris", "iris-run", epochs=40, lr=0.01)
    expected = evaluate_run(run)
    visit(server, page, dataset, spec, run.name, "Evaluate")
    page.get_by_text("rows of the test split").wait_for()
    cards = page.locator('[data-testid="stMetric"]')
    accuracy = (
        cards.filter(has_text="Accuracy").locator('[data-testid="stMetricValue"]').inner_text()
    )
    assert accuracy == f"{expected['summary']['accuracy']:.1%}"
    page.wait_for_function(f"({TITLES})().some(t => t.includes('ROC curve'))")
    titles = page.evaluate(TITLES)
    assert any("Confusion matrix" in t for t in titles) and any(
        "Precision-recall" in t for t in titles
    )
    cells = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
        .find(p => (p.layout.title || {}).text.includes('Confusion')).data[0].text"""
    assert page.evaluate(cells) == [[str(v) for v in row] for row in expected["confusion"]]
    page.get_by_text("Normalize by true class").click()
    settle(page)
    page.wait_for_function(f"({cells})()[0][0].endsWith('%')")
    shares = [[float(v.rstrip("%")) for v in row] for row in page.evaluate(cells)]
    assert all(
        abs(sum(row) - 100) <= 2 for row in shares
    )  # each true class's row adds up to 100% (rounded)
    no_exceptions(page)
    shot(page, "evaluate-iris")


def test_predict_new_rows_and_download_the_csv(server, page, tmp_path):
    from engine.data.prepare import prepare_file
    from engine.data.readers import read_table
    from engine.portable import csv_bytes
    from engine.predict import load_predictor, predict_table

    rows = "a,b,label\n" + "\n".join(
        f"{i % 7},{(i * 3) % 11},{'hi' if i % 7 > 3 else 'lo'}" for i in range(200)
    )
    dataset = prepare_file(rows.encode(), "small.csv", "label")
    spec = starter_spec(dataset.task, dataset.input_shape, dataset.num_classes)
    run = create_run(spec, {"epochs": 30, "lr": 0.01}, dataset.path, name="small-run")
    execute(run)
    new = tmp_path / "new.csv"
    new.write_text("b,a,extra\n1,6,=SUM(A1)\n2,0,x\n")
    model, meta = load_predictor(run)
    expected = csv_bytes(predict_table(model, meta, read_table(new.read_bytes(), new.name).frame))
    visit(server, page, dataset, spec, run.name, "Predict")
    page.locator('input[type="file"]').set_input_files(str(new))
    page.get_by_text("2 prediction(s).").wait_for()
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download predictions (CSV)").click()
    dl.value.save_as(tmp_path / "got.csv")
    assert (tmp_path / "got.csv").read_bytes() == expected
    assert b"'=SUM(A1)" in expected
    no_exceptions(page)
    shot(page, "predict-rows")


def test_draw_a_digit_and_see_the_prediction(server, page):
    import base64

    from engine.predict import load_predictor, predict_images

    dataset, spec, run = trained_starter("digits", "digits-run", epochs=5, lr=0.01)
    visit(server, page, dataset, spec, run.name, "Predict")
    page.get_by_role("tab", name="Draw one").click()
    settle(page)
    pad = page.locator(
        "canvas[aria-label='Drawing pad'][data-live='1']"
    )  # its handlers attached (a busy machine)
    pad.wait_for()
    box = pad.bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 40)
    page.mouse.down()
    for step in range(20):  # a "1": one vertical stroke
        page.mouse.move(box["x"] + 140, box["y"] + 40 + step * 10)
    page.mouse.up()
    metric = page.locator('[data-testid="stMetric"]', has_text="Prediction")
    metric.wait_for(timeout=60_000)
    drawn = base64.b64decode(pad.evaluate("c => c.toDataURL('image/png')").split(",", 1)[1])
    model, meta = load_predictor(run)
    expected = predict_images(model, meta, [("drawing.png", drawn)]).iloc[0]
    assert metric.locator('[data-testid="stMetricValue"]').inner_text() == str(
        expected["prediction"]
    )
    page.get_by_text(f"{expected['confidence']:.0%} confident").wait_for()
    no_exceptions(page)
    shot(page, "predict-draw")
