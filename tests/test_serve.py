"""The prediction service: a bundle's serve.py, run with LayerLab unimportable, answers /predict with exactly the
probabilities of `python -m engine predict` for a table model and an image model; `python -m engine serve` on a run
folder refuses malformed requests with a 4xx and a reason, and stays up for the next; a language model writes, a VAE
generates and a forecaster forecasts from the example requests the Export page sends."""

import base64
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
import torch

from engine import local_service
from engine.bundle import bundle_bytes
from engine.data.prepare import prepare_builtin, prepare_file
from engine.evaluate import evaluate_run
from engine.local_service import free_port
from engine.predict import load_predictor, noise_size, serving_info
from engine.runs import create_run, execute
from engine.service import MAX_BODY, RequestError, Service, example_request
from engine.templates import TEMPLATES, build
from tests.conftest import ROOT
from tests.test_bundle import ISOLATED, SOFTMAX_MLP, bundled_run, shop_table, unzip


class Running:
    """A service process on a free loopback port, stopped on exit."""

    def __init__(self, args, cwd, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([*args, "--port", str(self.port), "--quiet"], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip

    def __enter__(self):
        if not local_service.wait_for_health(self.url, 120, lambda: self.proc.poll() is None):
            assert self.proc.poll() is None, self.proc.stdout.read()
            raise AssertionError("the service did not answer /health")
        assert get(self.url, "/health")["status"] == "ok"
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)


def get(url: str, path: str) -> dict:
    """A GET's JSON answer, which must be a 200."""
    status, answer = local_service.request(url, path)
    assert status == 200, answer
    return answer


def post(url, body, raw: bytes | None = None, headers=None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data, {"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def cli_predictions(model, data, tmp_path) -> pd.DataFrame:
    """What `python -m engine predict` writes for `data`."""
    out = tmp_path / "cli.csv"
    subprocess.run([sys.executable, "-m", "engine", "predict", "--model", str(model), "--data", str(data),
                    "--out", str(out)], cwd=ROOT, check=True, capture_output=True)  # fmt: skip
    return pd.read_csv(out)


def probabilities_of(answer: dict) -> np.ndarray:
    return np.array([list(p["probabilities"].values()) for p in answer["predictions"]])


def test_a_bundles_serve_py_answers_a_table_and_an_image_model_like_the_cli(workspace, tmp_path):
    # A table: rows as JSON objects, with a missing value (null) and a category the model never saw.
    frame = shop_table()
    dataset = prepare_file(frame.to_csv(index=False).encode(), "shop.csv", "label")
    run = create_run(SOFTMAX_MLP, {"epochs": 3}, dataset.path, name="shop model")
    execute(run)
    folder = tmp_path / "table"
    names = unzip(bundle_bytes(run), folder)
    assert {"serve.py", "service.py", "Dockerfile", "requirements.txt", "MODEL_CARD.md"} <= names
    card = (
        folder / "MODEL_CARD.md"
    ).read_text()  # the run's own test metrics, per class, and its data's hash
    report = evaluate_run(run, "test")
    assert f"| accuracy | {report['summary']['accuracy']:.4g} |" in card
    for c in report["per_class"]:
        assert (
            f"| {c['class']} | {c['precision']:.4g} | {c['recall']:.4g} | {c['f1']:.4g} | {c['support']} |"
            in card
        )
    assert dataset.meta["hash"] in card and "Small data: 280 training rows" in card
    rows = frame.drop(columns="label").head(20)
    rows.loc[3, "colour"] = "purple"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    cli = cli_predictions(run, tmp_path / "rows.csv", tmp_path)
    records = json.loads(rows.to_json(orient="records"))
    assert records[0]["size"] is None  # row 0 of shop_table has no size: sent as null
    with Running([sys.executable, "-I", "-c", ISOLATED, "serve.py"], folder) as service:
        meta = get(service.url, "/metadata")
        assert meta["classes"] == ["buy", "skip"] and meta["serves"] == "table"
        assert {c["name"]: c["type"] for c in meta["inputs"]} == {
            "size": "number", "colour": "category", "member": "boolean"}  # fmt: skip
        assert meta["versions"]["torch"] == torch.__version__
        status, answer = post(service.url + "/predict", {"rows": records})
        assert status == 200, answer
        assert [p["prediction"] for p in answer["predictions"]] == cli["prediction"].tolist()
        np.testing.assert_allclose(
            probabilities_of(answer), cli[["p(buy)", "p(skip)"]].to_numpy(), atol=1e-6
        )
        np.testing.assert_allclose(
            [p["confidence"] for p in answer["predictions"]], cli["confidence"], atol=1e-6
        )
        example = meta["example"]  # the example the Export page shows is answered
        assert post(service.url + example["path"], example["body"])[0] == 200

    # Images: base64 PNGs.
    from PIL import Image

    shapes = prepare_builtin("shapes", n_samples=200)
    folder = tmp_path / "image"
    run = bundled_run(shapes, "lenet", 1, folder)
    images = tmp_path / "images"
    images.mkdir()
    encoded = []
    for i, img in enumerate((shapes.split("test")[0][:5] * 255).round().to(torch.uint8)):
        buffer = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buffer, "PNG")
        (images / f"img{i}.png").write_bytes(buffer.getvalue())
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    cli = cli_predictions(run, images, tmp_path)
    with Running([sys.executable, "-I", "-c", ISOLATED, "serve.py"], folder) as service:
        status, answer = post(service.url + "/predict", {"images": encoded})
        assert status == 200, answer
        assert [p["prediction"] for p in answer["predictions"]] == cli["prediction"].astype(
            str
        ).tolist()
        classes = get(service.url, "/metadata")["classes"]
        np.testing.assert_allclose(
            probabilities_of(answer), cli[[f"p({c})" for c in classes]].to_numpy(), atol=1e-6
        )
        status, answer = post(
            service.url + "/predict", {"images": ["bm90IGFuIGltYWdl"]}
        )  # "not an image"
        assert status == 422 and "image 0" in answer["error"]


def test_malformed_requests_get_a_4xx_with_the_reason_and_the_service_stays_up(workspace, tmp_path):
    frame = shop_table(200)
    dataset = prepare_file(frame.to_csv(index=False).encode(), "shop.csv", "label")
    run = create_run(SOFTMAX_MLP, {"epochs": 1}, dataset.path, name="shop model")
    execute(run)
    good = {"rows": [{"size": 90.5, "colour": "red", "member": "yes"}]}
    cases = [
        ({"rows": [{"size": 90.5, "colour": "red"}]}, None, 422, "lacks the column 'member'"),
        (
            {"rows": [{"size": "big", "colour": "red", "member": "no"}]},
            None,
            422,
            "expected a number",
        ),
        ({"rows": [{"size": [1], "colour": "red", "member": "no"}]}, None, 422, "not a list"),
        ({"rows": []}, None, 422, "non-empty list"),
        ({"rows": "size=3"}, None, 422, "non-empty list"),
        ({"images": []}, None, 422, "non-empty list"),
        (None, b"size=3&colour=red", 400, "not JSON"),
        (None, b"\xff\xfe{", 400, "not JSON"),
        (None, b"[1, 2]", 400, "JSON object"),
        ({"rows": [good["rows"][0]] * 10_001}, None, 413, "at most 10,000"),
    ]
    env = {"PATH": "/usr/bin:/bin", "LAYERLAB_HOME": str(workspace)}
    with Running([sys.executable, "-m", "engine", "serve", str(run)], ROOT, env) as service:
        for body, raw, status, words in cases:
            got, answer = post(service.url + "/predict", body, raw)
            assert (got, words in answer["error"]) == (status, True), (body, raw, answer)
            assert post(service.url + "/predict", good)[0] == 200  # still up, and answering
        # A body over the limit is refused from its Content-Length, before it is read.
        got, answer = post(
            service.url + "/predict", None, b"{}", {"Content-Length": str(MAX_BODY + 1)}
        )
        assert got == 413 and "at most" in answer["error"]
        assert post(service.url + "/generate", good)[0] == 400
        status, missing = local_service.request(service.url, "/nothing")
        assert status == 404 and "no endpoint /nothing" in missing["error"]
        assert post(service.url + "/predict", good)[0] == 200
        assert get(service.url, "/metadata")["name"] == "shop model"

    # The Export page's service stops by itself when the app's process ends.
    app = subprocess.Popen(["sleep", "600"])
    started = local_service.start(run, stop_with=app.pid)
    assert (
        local_service.running(run) == started and post(started["url"] + "/predict", good)[0] == 200
    )
    app.kill()
    app.wait()
    deadline = time.time() + 10
    while local_service.running(run) and time.time() < deadline:
        time.sleep(0.2)
    assert local_service.running(run) is None


@pytest.mark.parametrize(
    ("dataset", "template", "path", "key"),
    [("tales", "lstm_lm", "/generate", "text"), ("digits", "mlp_vae", "/generate", "samples"),
     ("traffic", "window_mlp", "/predict", "forecast")],
)  # fmt: skip
def test_the_service_writes_text_generates_samples_and_forecasts(
    workspace, dataset, template, path, key
):
    data = prepare_builtin(dataset)
    run = create_run(
        build(template, data.meta), {**TEMPLATES[template].train, "epochs": 1}, data.path
    )
    execute(run)
    model, meta = load_predictor(run)
    service = Service(model, serving_info(model, meta), dataset, {}, noise_size(model))
    asked, body = example_request(service.info, service.noise)
    assert asked == path  # the example the page sends goes where the model answers
    answer = service.handle(path, body)
    json.dumps(answer, allow_nan=False)  # JSON as it is sent
    assert answer[key]
    if key == "forecast":
        assert len(answer["forecast"]) == data.meta["preprocessing"]["horizon"]
    other = "/predict" if path == "/generate" else "/generate"
    with pytest.raises(RequestError) as refused:
        service.handle(other, body)
    assert refused.value.status == 400 and path in refused.value.message


def test_a_number_sent_for_a_category_matches_how_the_training_file_wrote_it():
    from engine.service import _category_text

    assert _category_text(3.0, {"1", "3"}) == "3"  # an integer column read from a CSV
    assert _category_text(3, {"2.5", "3.0"}) == "3.0"  # a decimal one
    assert _category_text(np.int64(2), {"2"}) == "2" and _category_text("red", {"red"}) == "red"
    assert _category_text(None, {"a"}) is None and _category_text(float("nan"), {"a"}) is None
    assert _category_text(7, {"1"}) == "7"  # unseen: as it is (the model's unseen-category slot)
