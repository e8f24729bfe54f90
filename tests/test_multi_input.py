"""Models with several inputs: a table's text beside its other columns, trained, exported and loaded as one model
with one input per part (like Keras' functional API)."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

from engine.compiler import compile_spec
from engine.data.builtin import load_builtin
from engine.data.prepare import prepare_builtin, prepare_frame
from engine.data.tabular import suggest_columns
from engine.errors import SpecError
from engine.export import example_input, input_names, load_model, onnx_bytes
from engine.spec import data_inputs, parse_spec
from engine.templates import starter_for, starter_train
from engine.train import TrainConfig, fit


def accuracy(dataset) -> float:
    result = fit(
        starter_for(dataset.meta),
        dataset,
        TrainConfig.parse(starter_train(dataset.meta)),
        emit=lambda e: None,
    )
    return result["metrics"]["val/accuracy"]


def test_two_inputs_beat_the_text_alone_and_the_numbers_alone():
    """The orders set is built so that the review's tone and the delivery time both decide the label."""
    both = prepare_builtin("orders")
    assert set(both.meta["inputs"]) == {"features", "review"}
    frame = load_builtin("orders")["frame"]
    alone = {}
    for keep in ("review", "numbers"):
        drop = ["delivery_minutes", "price", "cuisine"] if keep == "review" else ["review"]
        plans = [
            p.model_copy(update={"role": "ignore"}) if p.name in drop else p
            for p in suggest_columns(frame, "ordered_again")
        ]
        part = prepare_frame(frame, "ordered_again", name=keep, source="test", plans=plans)
        assert "inputs" not in part.meta  # one part: a one-input model
        alone[keep] = accuracy(part)
    together = accuracy(both)
    assert together >= max(alone.values()) + 0.05 and together >= 0.75, (together, alone)


def test_rows_pack_both_parts_and_the_model_takes_them_packed_or_apart():
    ds = prepare_builtin("orders", n_samples=200)
    model, _ = compile_spec(starter_for(ds.meta), data_inputs(ds.meta), seed=0)
    model.eval()
    rows = ds.tensors["x_val"][:9]
    features, review = model.unpack(rows)
    assert features.shape == (9, 7) and review.shape == (9, 64)
    assert (
        torch.equal(review, review.round()) and int(review.max()) < ds.meta["vocab_size"]
    )  # token ids
    with torch.no_grad():
        assert torch.equal(model(rows), model(features, review.long()))


def test_an_old_single_input_spec_and_its_weights_still_load(tmp_path):
    """Version 1 had one unnamed input: it becomes the input `features`, and its weights load unchanged."""
    old = {
        "version": 1,
        "input": {"shape": [4]},
        "nodes": [
            {"id": "fc", "op": "linear", "params": {"out_features": 8}, "inputs": ["input"]},
            {"id": "act", "op": "activation", "params": {"kind": "relu"}},
            {"id": "head", "op": "linear", "params": {"out_features": 3}},
        ],
    }
    spec = parse_spec(old)
    assert (
        spec.version == 2
        and list(spec.inputs) == ["features"]
        and spec.inputs["features"].shape == [4]
    )
    model, _ = compile_spec(old, seed=1)
    path = tmp_path / "old.safetensors"
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(path),
        metadata={"spec": json.dumps(old), "format": "layerlab"},
    )
    loaded, _ = load_model(path)
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_two_input_model_exports_to_onnx_with_one_named_input_per_part():
    ds = prepare_builtin("orders", n_samples=200)
    model, _ = compile_spec(starter_for(ds.meta), data_inputs(ds.meta), seed=0)
    model.eval()
    session = ort.InferenceSession(onnx_bytes(model), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [
        ("features", [7]),
        ("review", [64]),
    ]
    assert input_names(model) == ["features", "review"]
    for batch in (1, 7):
        features, review = example_input(model, batch)
        with torch.no_grad():
            expected = model(features, review).numpy()
        got = session.run(None, {"features": features.numpy(), "review": review.numpy()})[0]
        assert np.allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "spec, data, words",
    [
        (
            {
                "inputs": {"features": {}, "notes": {}},
                "nodes": [{"id": "a", "op": "linear", "inputs": ["input:notes"]}],
            },
            {"features": [4], "review": [12]},
            r"reads the input\(s\) notes, which the data does not have",
        ),
        (
            {"inputs": {"features": {}, "review": {}}, "nodes": [{"id": "a", "op": "linear"}]},
            (4,),
            "has one",
        ),
        (
            {"nodes": [{"id": "a", "op": "linear", "inputs": ["input:review"]}]},
            None,
            "neither an input nor a node",
        ),
    ],
)
def test_inputs_that_do_not_match_the_data_say_what_to_change(spec, data, words):
    with pytest.raises(SpecError, match=words):
        compile_spec(spec, data)


def test_a_model_may_read_the_second_input_first():
    """Input order follows the data (how its rows are packed), whatever order the spec lists them in."""
    spec = {
        "inputs": {"review": {}, "features": {}},
        "nodes": [
            {
                "id": "embed",
                "op": "embedding",
                "params": {"num_embeddings": 40, "embedding_dim": 4},
            },
            {"id": "pool", "op": "seq_pool", "params": {"mode": "masked_mean"}},
            {
                "id": "fc",
                "op": "linear",
                "params": {"out_features": 4},
                "inputs": ["input:features"],
            },
            {"id": "join", "op": "concat", "inputs": ["pool", "fc"]},
            {"id": "head", "op": "linear", "params": {"out_features": 2}},
        ],
    }
    data = {"features": {"shape": [3]}, "review": {"shape": [6], "tokens": True}}
    model, _ = compile_spec(spec, data, seed=0)
    assert list(model.spec.inputs) == ["features", "review"]
    again, _ = compile_spec(model.spec.to_dict(), seed=0)  # as loaded from its weights' metadata
    rows = torch.cat([torch.randn(4, 3), torch.randint(0, 40, (4, 6)).float()], 1)
    with torch.no_grad():
        assert torch.equal(model(rows), again(rows))
