"""Page tests with Streamlit's AppTest: every page renders, widgets drive the session state."""

import json
import time

import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

SPEC = "ll.spec"
DATASET = "ll.dataset_id"


def app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def button(at, label):
    return next(b for b in at.button if b.label == label)


@pytest.mark.parametrize(
    "page", ["data", "build", "train", "tune", "evaluate", "predict", "export"]
)
def test_every_page_renders_on_the_default_dataset_and_model(page):
    at = goto(app(), page)
    assert at.title[0].value == page.capitalize()
    assert at.session_state[DATASET].startswith("two-moons")
    assert at.session_state[SPEC]["nodes"][-1]["params"]["out_features"] == 2
    assert not at.error


def test_each_page_is_safe_to_run_on_its_own():
    for page in ["data", "build", "train", "tune", "evaluate", "predict", "export"]:
        at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=60)
        at.run()
        assert not at.exception, (page, at.exception)


def test_choosing_a_builtin_dataset_brings_its_starter_model():
    at = app()
    at.selectbox(key="data.builtin").set_value("iris").run()
    button(at, "Use this dataset").click().run()
    assert not at.exception
    assert at.session_state[DATASET].startswith("iris")
    assert at.session_state[SPEC]["nodes"][-1]["params"]["out_features"] == 3
    assert any("Now using 'Iris'" in i.value for i in at.info)
    goto(at, "build")
    assert any(m.label == "Parameters" and m.value == "4,675" for m in at.metric)
    assert any("starter model for a table of numbers" in c.value for c in at.caption)
    goto(at, "data")
    at.selectbox(key="data.builtin").set_value("reviews").run()
    button(at, "Use this dataset").click().run()
    assert [n["op"] for n in at.session_state[SPEC]["nodes"][:2]] == ["embedding", "seq_pool"]
    goto(at, "build")
    assert (
        any("starter model for text: an Embedding" in c.value for c in at.caption)
        and not at.exception
    )


def test_csv_upload_preview_target_and_prepare():
    at = app()
    rows = "".join(
        f"{i},{'ab'[i % 2]},{'' if i % 9 == 0 else i * 0.3},{'yes' if i % 3 else 'no'}\n"
        for i in range(60)
    )
    at.file_uploader(key="data.upload").set_value(
        ("people.csv", f"id,group,score,bought\n{rows}".encode(), "text/csv")
    ).run()
    assert not at.exception
    target = next(s for s in at.selectbox if s.label.startswith("Target column"))
    assert target.value == "bought" and not at.warning
    assert at.radio(key="data.task.bought").value == "classification"
    button(at, "Prepare dataset").click().run()
    assert at.session_state[DATASET].startswith("people")
    notes = next(
        e for e in at.expander if "preparation note(s)" in e.label
    )  # folded into one summary line
    assert any(
        "'score': 7 missing value(s) filled with the median" in m.value for m in notes.markdown
    )
    assert any("Ignoring 'id': looks like an ID" in m.value for m in notes.markdown)
    assert [i.value for i in at.info] == [
        "Now using 'people'. The Build page holds a model that fits it."
    ]


def test_the_split_is_chosen_on_the_data_page_and_a_split_leaving_too_few_rows_is_refused():
    at = app()
    rows = "".join(f"{i * 0.1:.1f},{i % 2}\n" for i in range(100))
    at.file_uploader(key="data.upload").set_value(
        ("s.csv", f"x,y\n{rows}".encode(), "text/csv")
    ).run()
    at.number_input(key="data.table_split.val").set_value(50).run()
    at.number_input(key="data.table_split.test").set_value(30).run()
    assert "leave only 20%" in at.error[0].value and button(at, "Prepare dataset").disabled
    at.number_input(key="data.table_split.val").set_value(20).run()
    at.number_input(key="data.table_split.test").set_value(10).run()
    assert not at.error
    assert any("70% train · 20% validation · 10% test" in c.value for c in at.caption)
    button(at, "Prepare dataset").click().run()
    from engine.data.store import load_meta

    assert load_meta(at.session_state[DATASET])["sizes"] == {"train": 70, "val": 20, "test": 10}


def test_picking_an_unlikely_target_warns_and_health_fixes_are_buttons():
    at = app()
    rows = "".join(
        f"{i % 20},{i * 0.3 if i % 7 == 0 else ''},FR,{'ab'[i % 2]},"
        f"{f'great trip {i} with lots of birds' if i % 7 == 0 else ''}\n"
        for i in range(60)
    )
    at.file_uploader(key="data.upload").set_value(
        ("birds.csv", f"n,depth,country,group,comment\n{rows}".encode(), "text/csv")
    ).run()
    target = next(s for s in at.selectbox if s.label.startswith("Target column"))
    assert (
        target.value == "group"
    )  # the last column is mostly empty free text; the one before it constant
    target.set_value("comment").run()
    assert any("unlikely target" in w.value and "empty" in w.value for w in at.warning)
    next(s for s in at.selectbox if s.label.startswith("Target column")).set_value("group").run()
    assert not at.warning
    button(at, "Prepare dataset").click().run()
    first = at.session_state[DATASET]
    assert not at.exception and first.startswith("birds")
    from engine.data.store import load_meta

    meta = load_meta(first)
    assert "country" not in meta["feature_names"]  # constant: ignored from the start
    assert meta["feature_names"] == ["n", "depth"]  # the mostly empty free text is ignored too
    assert (
        meta["health"]["mostly_missing_columns"] == ["depth"]
        and meta["health"]["duplicate_rows"] > 0
    )
    button(at, "Ignore 1 mostly-missing column(s)").click().run()
    assert not at.exception and at.session_state[DATASET] != first
    meta = load_meta(at.session_state[DATASET])
    assert not meta["health"]["mostly_missing_columns"] and meta["feature_names"] == ["n"]
    button(at, next(b.label for b in at.button if b.label.startswith("Drop the "))).click().run()
    assert load_meta(at.session_state[DATASET])["health"]["duplicate_rows"] == 0


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "is empty"),
        (b"a,b,c\n", "no data rows"),
        (b"\x00\x01\x02\x03binary", "holds binary data"),
    ],
)
def test_bad_uploads_show_a_message_and_keep_the_dataset(content, words):
    at = app()
    before = at.session_state[DATASET]
    at.file_uploader(key="data.upload").set_value(("bad.csv", content, "text/csv")).run()
    assert not at.exception
    assert any(words in e.value for e in at.error)
    assert at.session_state[DATASET] == before


def test_one_class_target_is_explained():
    at = app()
    at.file_uploader(key="data.upload").set_value(
        ("one.csv", b"x,y\n" + b"1,a\n" * 20, "text/csv")
    ).run()
    button(at, "Prepare dataset").click().run()
    assert any("only one class" in e.value for e in at.error)


def test_build_add_select_edit_move_remove():
    at = goto(app(), "build")
    add = next(s for s in at.selectbox if s.label == "Add a layer")
    add.set_value("dropout").run()
    button(at, "Add").click().run()
    nodes = at.session_state[SPEC]["nodes"]
    assert [n["op"] for n in nodes] == [
        "linear",
        "activation",
        "linear",
        "activation",
        "dropout",
        "linear",
    ]
    assert at.session_state["ll.selected_node"] == "dropout_1"
    at.number_input(key="param.dropout_1.p").set_value(0.2).run()
    assert at.session_state[SPEC]["nodes"][4]["params"] == {"p": 0.2}
    button(at, "Up").click().run()
    assert at.session_state[SPEC]["nodes"][3]["id"] == "dropout_1"
    button(at, "Delete").click().run()
    assert "dropout_1" not in [n["id"] for n in at.session_state[SPEC]["nodes"]]
    assert not at.exception


def test_build_shows_the_error_at_the_offending_layer():
    at = app()
    at.selectbox(key="data.builtin").set_value("digits").run()
    button(at, "Use this dataset").click().run()
    goto(at, "build")
    at.session_state["ll.selected_node"] = (
        "gap"  # the proposed CNN's global pooling: Dense then gets (64, 2, 2)
    )
    at.run()
    button(at, "Delete").click().run()
    assert any("Layer 'output'" in e.value and "Flatten" in e.value for e in at.error)
    assert not at.exception


def test_train_refuses_bad_settings_before_start_with_advice():
    """Start is disabled with the reason beside it (the run would be refused), and the page, its run list
    included, still renders: no error box."""
    at = goto(app(), "train")
    at.number_input(key="train.epochs").set_value(1).run()
    button(at, "Start training").click().run()
    assert wait_finished(at.session_state["ll.run_id"]) == "completed"
    at.number_input(key="train.lr").set_value(0.0).run()
    assert button(at, "Start training").disabled
    assert any("Can't start yet" in e.value and "greater than 0" in e.value for e in at.error)
    assert not any(".." in e.value for e in at.error)
    assert len(at.dataframe) >= 1 and not at.exception  # the runs table is drawn
    at.number_input(key="train.lr").set_value(0.001).run()
    assert not button(at, "Start training").disabled and not at.error
    at.number_input(key="train.bs").set_value(5000).run()
    assert button(at, "Start training").disabled
    assert any("larger than the 700 training rows" in e.value for e in at.error)
    spec = at.session_state[SPEC]
    at.session_state[SPEC] = {
        **spec,
        "nodes": [
            {"id": "flat", "op": "flatten", "params": {}},
            {"id": "conv", "op": "conv2d", "params": {}},
            *spec["nodes"],
        ],
    }
    at.number_input(key="train.bs").set_value(32).run()
    assert button(at, "Start training").disabled and not at.exception
    assert any("conv" in e.value for e in at.error)


def test_train_starts_a_worker_and_export_offers_its_weights():
    at = goto(app(), "train")
    at.number_input(key="train.epochs").set_value(5).run()
    button(at, "Start training").click().run()
    run_id = at.session_state["ll.run_id"]
    assert run_id
    assert wait_finished(run_id) == "completed"
    at.run()
    assert any("Run completed" in s.value for s in at.success)
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert (
        "Loss per epoch" in titles and "Learning rate by step" not in titles
    )  # detail charts: drawn when opened
    at.session_state[f"more.{run_id}"] = True
    at.run()
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert "Learning rate by step" in titles and "Gradient norm per layer" in titles
    goto(at, "export")
    assert at.selectbox(key="export.run").value == run_id
    assert not at.exception


def test_non_numeric_target_for_regression_is_explained():
    at = app()
    rows = "".join(f"{i},kind{i}\n" for i in range(30))
    at.file_uploader(key="data.upload").set_value(
        ("t.csv", f"x,y\n{rows}".encode(), "text/csv")
    ).run()
    next(s for s in at.selectbox if s.label.startswith("Target column")).set_value("y").run()
    assert any("like an ID" in w.value for w in at.warning)
    at.radio(key="data.task.y").set_value("regression").run()
    button(at, "Prepare dataset").click().run()
    assert any("regression needs a numeric target" in e.value for e in at.error)
    assert at.session_state[DATASET].startswith("two-moons")


def wait_finished(run_id: str, timeout: float = 90) -> str:
    from engine.runs import read_status, runs_dir

    deadline = time.time() + timeout
    while (state := read_status(runs_dir() / run_id)["state"]) in (
        "queued",
        "running",
    ) and time.time() < deadline:
        time.sleep(0.2)
    return state


def test_a_diverging_run_ends_as_diverged_with_advice():
    at = app()
    at.selectbox(key="data.builtin").set_value("diabetes").run()
    button(at, "Use this dataset").click().run()
    goto(at, "train")
    at.selectbox(key="train.optimizer").set_value("sgd").run()
    at.number_input(key="train.lr").set_value(1000.0).run()
    button(at, "Start training").click().run()
    assert wait_finished(at.session_state["ll.run_id"]) == "diverged"
    at.run()
    assert any(
        "diverged" in e.value and "learning rate, 1000, is most likely too high" in e.value
        for e in at.error
    )


def test_a_loss_that_explodes_without_nan_ends_as_diverged_naming_the_learning_rate():
    """The issue's case: Adam at 1e6 on the default moons reached a training loss of 6e19 and a validation loss of
    18537, finite, and ended as a green 'completed'."""
    at = goto(app(), "train")
    at.number_input(key="train.lr").set_value(1e6).run()
    at.number_input(key="train.epochs").set_value(20).run()
    button(at, "Start training").click().run()
    run_id = at.session_state["ll.run_id"]
    assert wait_finished(run_id) == "diverged"
    at.run()
    assert not at.success and any(
        "exploded" in e.value and "learning rate, 1e+06" in e.value for e in at.error
    )
    from engine.runs import read_events, runs_dir

    coach = [e["message"] for e in read_events(runs_dir() / run_id)[0] if e["type"] == "coach"]
    assert not any("relu instead" in m.lower() for m in coach), (
        coach
    )  # the starter model already uses ReLU


def test_augmentation_settings_on_the_data_page_reach_training():
    at = app()
    at.selectbox(key="data.builtin").set_value("shapes").run()
    button(at, "Use this dataset").click().run()
    at.number_input(key="aug.rotation").set_value(15.0).run()
    at.toggle(key="aug.flip").set_value(True).run()
    assert (
        at.session_state["ll.train"]["rotation"] == 15.0
        and at.session_state["ll.train"]["flip"] is True
    )
    assert any("Augmentation for training: flip, rotation." in c.value for c in at.caption)
    goto(at, "train")
    assert not at.exception


def test_schedule_early_stopping_clipping_and_precision_reach_the_run():
    at = goto(app(), "train")
    at.selectbox(key="train.scheduler").set_value("cosine").run()
    at.number_input(key="train.warmup_epochs").set_value(1).run()
    at.checkbox(key="train.early").check().run()
    at.number_input(key="train.patience").set_value(2).run()
    at.selectbox(key="train.monitor").set_value("val/accuracy").run()
    at.number_input(key="train.clip_norm").set_value(1.0).run()
    at.number_input(key="train.smoothing").set_value(0.1).run()
    at.selectbox(key="train.precision").set_value("bf16").run()
    at.checkbox(key="train.diagnostics").uncheck().run()
    at.number_input(key="train.epochs").set_value(4).run()
    button(at, "Start training").click().run()
    from engine.runs import runs_dir

    run_dir = runs_dir() / at.session_state["ll.run_id"]
    config = json.loads((run_dir / "train.json").read_text())["config"]
    assert (
        config["scheduler"],
        config["warmup_epochs"],
        config["early_stopping"],
        config["monitor"],
    ) == ("cosine", 1, 2, "val/accuracy")
    assert config["clip_grad_norm"] == 1.0 and config["label_smoothing"] == 0.1
    assert config["precision"] == "bf16" and config["diagnostics"] is False
    assert wait_finished(run_dir.name) == "completed"
    at.run()
    assert not at.exception
    lrs = [
        json.loads(line).get("lr")
        for line in (run_dir / "events.jsonl").read_text().splitlines()
        if '"epoch_end"' in line
    ]
    assert len(lrs) >= 2 and lrs[-1] < lrs[0]


def test_evaluate_page_scores_a_finished_run_on_its_test_split():
    from engine.evaluate import evaluate_run
    from engine.runs import runs_dir

    at = goto(app(), "train")
    at.number_input(key="train.epochs").set_value(10).run()
    at.number_input(key="train.lr").set_value(0.01).run()
    button(at, "Start training").click().run()
    run_id = at.session_state["ll.run_id"]
    assert wait_finished(run_id) == "completed"
    goto(at, "evaluate")
    expected = evaluate_run(runs_dir() / run_id)["summary"]
    cards = {m.label: m.value for m in at.metric}
    assert (
        cards["Accuracy"] == f"{expected['accuracy']:.1%}"
        and cards["ROC AUC"] == f"{expected['roc_auc']:.3f}"
    )
    at.toggle(key="evaluate.normalized").set_value(True).run()
    at.selectbox(key="evaluate.split").set_value("val").run()
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}[
        "Accuracy"
    ] == f"{evaluate_run(runs_dir() / run_id, 'val')['summary']['accuracy']:.1%}"


def test_export_page_offers_code_a_bundle_and_checked_onnx_and_torchscript():
    at = goto(app(), "train")
    at.number_input(key="train.epochs").set_value(2).run()
    button(at, "Start training").click().run()
    assert wait_finished(at.session_state["ll.run_id"]) == "completed"
    goto(at, "export")
    assert "Download model.py" in [d.proto.label for d in at.get("download_button")]
    for label in ("Build ONNX", "Build TorchScript", "Build bundle (.zip)"):
        button(at, label).click().run()
        assert not at.exception and not at.error
    downloads = [d.proto.label for d in at.get("download_button")]
    assert {"Download ONNX", "Download TorchScript", "Download bundle (.zip)"} <= set(downloads)


def test_frozen_layers_chosen_on_the_train_page_stay_fixed():
    from safetensors.torch import load_file

    from engine.compiler import compile_spec
    from engine.runs import runs_dir

    at = goto(app(), "train")
    at.multiselect(key="train.freeze").set_value(["dense_1"]).run()
    at.number_input(key="train.epochs").set_value(3).run()
    button(at, "Start training").click().run()
    run_dir = runs_dir() / at.session_state["ll.run_id"]
    assert json.loads((run_dir / "train.json").read_text())["config"]["freeze"] == ["dense_1"]
    assert wait_finished(run_dir.name) == "completed"
    fresh, _ = compile_spec(at.session_state[SPEC], (2,), seed=0)
    after = load_file(run_dir / "model.safetensors")
    assert torch.equal(after["layers.dense_1.weight"], fresh.state_dict()["layers.dense_1.weight"])
    assert not torch.equal(
        after["layers.dense_2.weight"], fresh.state_dict()["layers.dense_2.weight"]
    )


def test_predict_page_for_an_image_model_offers_upload_and_a_drawing_pad():
    from engine.data.prepare import prepare_builtin
    from engine.runs import create_run, execute
    from engine.spec import starter_spec
    from ui.state import write_session

    dataset = prepare_builtin("digits")
    spec = starter_spec(dataset.task, dataset.input_shape, dataset.num_classes)
    run = create_run(spec, {"epochs": 1}, dataset.path)
    execute(run)
    write_session(dataset.id, spec, run.name)
    at = goto(app(), "predict")
    assert [t.label for t in at.tabs] == ["Upload images", "Draw one"]
    assert at.slider(key="predict.pen_width").value == 22 and not at.error
    assert any("Draw on the pad" in i.value for i in at.info)  # nothing drawn yet: how to start
    import io

    from PIL import Image

    good = io.BytesIO()
    Image.new("L", (8, 8), 128).save(good, format="PNG")
    at.file_uploader(key="predict.images").set_value(
        [("one.png", good.getvalue(), "image/png"), ("broken.png", b"not an image", "image/png")]
    ).run()
    assert not at.exception and not at.error
    assert any(
        "1 prediction(s). 1 file(s) could not be read: see the error column." in m.value
        for m in at.success
    )


def test_predict_page_takes_an_uploaded_bundle_without_any_run():
    """A model trained elsewhere: its bundle uploaded on the Predict page predicts rows; no run in the workspace."""
    import shutil

    import pandas as pd

    from engine.bundle import bundle_bytes
    from engine.data.prepare import prepare_file
    from engine.runs import create_run, execute, runs_dir

    frame = pd.DataFrame({"a": range(60), "b": [i % 7 for i in range(60)], "y": ["lo", "hi"] * 30})
    dataset = prepare_file(frame.to_csv(index=False).encode(), "t.csv", "y")
    run = create_run(
        {"nodes": [{"id": "fc", "op": "linear", "params": {"out_features": 2}}]},
        {"epochs": 1},
        dataset.path,
    )
    execute(run)
    bundle = bundle_bytes(run)
    shutil.rmtree(runs_dir())
    at = goto(app(), "predict")
    assert any("No trained model yet" in i.value for i in at.info)
    at.session_state["predict.source"] = "A bundle or weights file"
    at.run()
    at.file_uploader(key="predict.model_file").set_value(
        ("elsewhere.zip", b"PK\x03\x04 not really", "application/zip")
    )
    at.run()
    assert any("is a damaged zip archive" in e.value for e in at.error) and not at.exception
    at.file_uploader(key="predict.model_file").set_value(
        ("elsewhere.zip", bundle, "application/zip")
    ).run()
    new = frame.drop(columns="y").head(20).to_csv(index=False).encode()
    at.file_uploader(key="predict.table").set_value(("new.csv", new, "text/csv")).run()
    assert not at.exception and any("20 prediction(s)." in s.value for s in at.success)


def test_a_session_saved_with_a_version_1_model_opens_on_every_page():
    """Sessions saved before specs had named inputs hold `"version": 1, "input": {...}`: the model comes back in
    today's format, and Build's linter and diagram read it."""
    from engine.data.prepare import prepare_builtin
    from ui.state import write_session

    ds = prepare_builtin("iris")
    old = {
        "version": 1,
        "input": {"shape": None},
        "nodes": [
            {
                "id": "fc",
                "op": "linear",
                "params": {"out_features": 8, "bias": True},
                "inputs": None,
            },
            {
                "id": "act",
                "op": "activation",
                "params": {"kind": "relu", "negative_slope": 0.01},
                "inputs": None,
            },
            {
                "id": "out",
                "op": "linear",
                "params": {"out_features": 3, "bias": True},
                "inputs": ["act"],
            },
        ],
        "output": None,
    }
    write_session(ds.id, old)
    at = app()
    assert at.session_state[SPEC]["version"] == 2 and "features" in at.session_state[SPEC]["inputs"]
    for page in ("build", "train", "export"):
        goto(at, page)
        assert not at.error, [e.value for e in at.error]


def test_an_unexpected_error_on_a_page_shows_an_id_and_logs_the_traceback(monkeypatch, workspace):
    """What no page handles: a short message with an error id on the page, the traceback in the workspace's log."""
    import engine.data.readers

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug, not the user's doing")

    at = app()
    before = at.session_state[DATASET]
    monkeypatch.setattr(engine.data.readers, "read_table", broken)
    at.file_uploader(key="data.upload").set_value(("t.csv", b"a,b\n1,2\n", "text/csv")).run()
    assert not at.exception
    shown = " ".join(e.value for e in at.error)
    error_id = shown.split("Error id **")[1].split("**")[0]
    assert "ZeroDivisionError" in shown and "Traceback" not in shown and "a bug" not in shown
    log = (workspace / "logs" / "errors.log").read_text()
    assert (
        f"error {error_id}" in log and "Traceback" in log and "a bug, not the user's doing" in log
    )
    assert at.session_state[DATASET] == before


def test_repeated_column_names_are_said_on_the_data_page():
    at = app()
    at.file_uploader(key="data.upload").set_value(
        ("dup.csv", b"x,y,y\n" + b"1,0,2\n2,1,3\n" * 10, "text/csv")
    ).run()
    assert not at.exception
    assert any(
        "The column name 'y' appears 2 times in the header: read as 'y', 'y.1'" in i.value
        for i in at.info
    )


def test_an_optimizers_and_a_schedules_own_settings_are_drawn_from_the_config_schema():
    at = goto(app(), "train")
    assert "train.momentum" not in [w.key for w in at.number_input]  # Adam takes no momentum
    at.selectbox(key="train.optimizer").set_value("sgd").run()
    assert at.number_input(key="train.momentum").label == "Momentum"
    at.number_input(key="train.momentum").set_value(0.5).run()
    at.checkbox(key="train.nesterov").check().run()
    at.selectbox(key="train.scheduler").set_value("step").run()
    assert at.number_input(key="train.step_size").label == "Every (epochs)"
    at.number_input(key="train.step_size").set_value(3).run()
    at.number_input(key="train.gamma").set_value(0.5).run()
    saved = at.session_state["ll.train"]
    assert (saved["optimizer"], saved["momentum"], saved["nesterov"]) == ("sgd", 0.5, True)
    assert (saved["scheduler"], saved["step_size"], saved["gamma"]) == ("step", 3, 0.5)
    assert not at.exception


def test_every_page_renders_for_a_forecaster_and_its_run():
    """The built-in series and its proposed forecaster: every page draws (the series split by time, the
    forecaster's errors beside the naive forecasts', the history upload), with no error."""
    from engine.evaluate import evaluate_run
    from engine.runs import runs_dir

    at = app()
    at.selectbox(key="data.builtin").set_value("traffic").run()
    at.slider(key="data.n_samples.traffic").set_value(1500).run()
    button(at, "Use this dataset").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert at.session_state[DATASET].startswith("traffic")
    assert [n["op"] for n in at.session_state[SPEC]["nodes"]] == ["lstm", "linear"]
    assert any(m.label == "Horizon" and m.value == "12 steps" for m in at.metric)
    goto(at, "build")
    assert any("starter model for a time series" in c.value for c in at.caption) and not at.error
    goto(at, "train")
    at.number_input(key="train.epochs").set_value(3).run()
    button(at, "Start training").click().run()
    run_id = at.session_state["ll.run_id"]
    assert wait_finished(run_id) == "completed"
    for page in ["train", "tune", "evaluate", "predict", "export"]:
        goto(at, page)
        assert not at.error, (page, at.error)
    goto(at, "evaluate")
    expected = evaluate_run(runs_dir() / run_id)
    cards = {m.label: m.value for m in at.metric}
    assert cards["MAE"] == f"{expected['summary']['mae']:.4g}"


def test_every_page_renders_for_a_language_model_and_its_run():
    """The built-in tales and the proposed causal transformer: every page draws, and Predict writes text."""
    at = app()
    at.selectbox(key="data.builtin").set_value("tales").run()
    at.slider(key="data.n_samples.tales").set_value(200).run()
    button(at, "Use this dataset").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert [n["op"] for n in at.session_state[SPEC]["nodes"]][-2:] == [
        "transformer_encoder",
        "linear",
    ]
    goto(at, "build")
    assert any("text to generate" in c.value for c in at.caption) and not at.error
    goto(at, "train")
    at.number_input(key="train.epochs").set_value(1).run()
    button(at, "Start training").click().run()
    assert wait_finished(at.session_state["ll.run_id"]) == "completed"
    for page in ["train", "tune", "evaluate", "export", "predict"]:
        goto(at, page)
        assert not at.error, (page, at.error)
    assert any(m.label == "Bits per token" for m in goto(at, "evaluate").metric)
    goto(at, "predict")
    at.text_area(key="predict.prompt").set_value("the cat").run()
    button(at, "Generate").click().run()
    assert not at.error and len(at.code[-1].value) > len("the cat")


def test_the_tune_page_refuses_a_bad_range_with_the_reason_and_starts_nothing():
    from engine.search import list_studies

    at = goto(app(), "tune")
    assert [s.label for s in at.multiselect if s.label == "Settings to search"]
    at.number_input(key="tune.low.lr").set_value(0.5).run()  # above its "to" (0.1)
    button(at, "Start the search").click().run()
    assert not at.exception
    assert "must be below" in at.error[0].value and list_studies() == []
