"""Every linter rule: one model that triggers it, and its fix, after which the rule is quiet."""

import pytest

from engine.compiler import analyse
from engine.linter import lint
from engine.spec import data_inputs, parse_spec
from engine.train.config import TrainConfig, preflight

CLASSES = {"task": "classification", "input_shape": [4], "classes": ["a", "b", "c"]}
IMAGES = {
    "task": "classification",
    "input_shape": [1, 8, 8],
    "classes": [str(i) for i in range(10)],
}
NUMBERS = {"task": "regression", "input_shape": [4], "classes": None}
MIXED = {
    "task": "classification",
    "input_shape": [16],
    "classes": ["neg", "pos"],
    "vocab_size": 40,
    "inputs": {
        "features": {"shape": [4], "tokens": False},
        "review": {"shape": [12], "tokens": True},
    },
}


def n(node_id, op, inputs=None, **params):
    return {"id": node_id, "op": op, "params": params, **({"inputs": inputs} if inputs else {})}


def mlp(*tail, out=3):
    return {
        "version": 1,
        "nodes": [
            n("fc1", "linear", out_features=16),
            n("act1", "activation", kind="relu"),
            n("head", "linear", out_features=out),
            *tail,
        ],
    }


CASES = {
    "softmax_before_cross_entropy": (mlp(n("soft", "activation", kind="softmax")), CLASSES, {}),
    "sigmoid_before_bce": (
        mlp(n("sig", "activation", kind="sigmoid"), out=1),
        {**CLASSES, "classes": ["no", "yes"]},
        {"loss": "bce_with_logits"},
    ),
    "output_width": (mlp(out=5), CLASSES, {}),
    "regression_loss_on_classes": (mlp(), CLASSES, {"loss": "mse"}),
    "classification_loss_on_numbers": (mlp(out=1), NUMBERS, {"loss": "cross_entropy"}),
    "missing_flatten": (
        {"nodes": [n("conv", "conv2d", out_channels=4), n("fc", "linear", out_features=10)]},
        IMAGES,
        {},
    ),
    "double_activation": (
        {
            "nodes": [
                n("fc1", "linear", out_features=8),
                n("a1", "activation", kind="relu"),
                n("a2", "activation", kind="tanh"),
                n("head", "linear", out_features=3),
            ]
        },
        CLASSES,
        {},
    ),
    "dropout_after_output": (mlp(n("drop", "dropout")), CLASSES, {}),
    "layer_after_output": (mlp(n("relu_out", "activation", kind="relu")), CLASSES, {}),
    "dense_without_activation": (
        {
            "nodes": [
                n("fc1", "linear", out_features=16),
                n("fc2", "linear", out_features=16),
                n("act", "activation", kind="relu"),
                n("head", "linear", out_features=3),
            ]
        },
        CLASSES,
        {},
    ),
    "embedding_smaller_than_vocabulary": (
        {
            "nodes": [
                n("emb", "embedding", num_embeddings=10, embedding_dim=8),
                n("pool", "seq_pool"),
                n("head", "linear", out_features=2),
            ]
        },
        {
            "task": "classification",
            "input_shape": [12],
            "classes": ["neg", "pos"],
            "vocab_size": 40,
        },
        {},
    ),
    "tokens_without_embedding": (  # the starter MLP on a text column: token ids fed to Dense as numbers
        mlp(out=2),
        {
            "task": "classification",
            "input_shape": [12],
            "classes": ["neg", "pos"],
            "vocab_size": 40,
            "preprocessing": {"columns": [], "text": {"columns": ["review"]}},
        },
        {},
    ),
    "input_not_read": (
        mlp(out=2),
        MIXED,
        {},
    ),  # a one-input MLP on a table with text: the text is never read
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_and_its_fix_silences_it(rule):
    spec, meta, train = CASES[rule]
    findings = [f for f in lint(spec, meta, train) if f.rule == rule]
    assert len(findings) == 1, [f.rule for f in lint(spec, meta, train)]
    finding = findings[0]
    assert finding.message and finding.fix_label
    fixed_spec, fixed_train = finding.fix(spec, train)
    assert not [f for f in lint(fixed_spec, meta, fixed_train) if f.rule == rule]
    infos, error = analyse(fixed_spec, data_inputs(meta))
    assert error is None
    # After the fix the model trains with these settings.
    preflight(
        parse_spec(fixed_spec),
        infos,
        TrainConfig.parse(fixed_train),
        meta["task"],
        len(meta["classes"] or []) or None,
        meta["input_shape"],
        100,
    )


def test_healthy_models_have_no_findings():
    assert lint(mlp(), CLASSES, {}) == []
    assert lint(mlp(out=1), NUMBERS, {}) == []
    assert [f.rule for f in lint(mlp(n("soft", "activation", kind="softmax")), CLASSES, {})] == [
        "softmax_before_cross_entropy"
    ]  # a final softmax is not "a layer after the output"


def test_every_template_is_free_of_findings_on_the_data_it_suits():
    from engine.data.prepare import prepare_builtin
    from engine.templates import TEMPLATES, build

    for template in TEMPLATES.values():
        meta = prepare_builtin(template.dataset).meta
        rules = [f.rule for f in lint(build(template, meta), meta, template.train)]
        assert set(rules) <= {"softmax_before_cross_entropy"}, (
            template.name,
            rules,
        )  # Keras' MLP ends in softmax


def test_a_fix_inserts_relu_between_two_dense_layers_with_explicit_inputs():
    spec = {
        "nodes": [
            n("fc1", "linear", out_features=16),
            n("fc2", "linear", ["fc1"], out_features=16),
            n("act", "activation", kind="relu"),
            n("head", "linear", out_features=3),
        ]
    }
    (finding,) = [f for f in lint(spec, CLASSES, {}) if f.rule == "dense_without_activation"]
    fixed, _ = finding.fix(spec, {})
    relu = next(x for x in fixed["nodes"] if x["op"] == "activation" and x["id"] != "act")
    assert relu["params"]["kind"] == "relu" and relu["inputs"] == ["fc1"]
    assert next(x for x in fixed["nodes"] if x["id"] == "fc2")["inputs"] == [relu["id"]]


def test_fix_keeps_explicit_inputs_wired():
    spec = {
        "nodes": [
            n("conv", "conv2d", out_channels=4),
            n("side", "conv2d", ["input"], out_channels=4),
            n("fc", "linear", ["conv"], out_features=10),
        ],
        "output": "fc",
    }
    (finding,) = [f for f in lint(spec, IMAGES, {}) if f.rule == "missing_flatten"]
    fixed, _ = finding.fix(spec, {})
    fc = next(x for x in fixed["nodes"] if x["id"] == "fc")
    flat = next(x for x in fixed["nodes"] if x["op"] == "flatten")
    assert fc["inputs"] == [flat["id"]] and flat["inputs"] == ["conv"]
    assert analyse(fixed, IMAGES["input_shape"])[1] is None


def test_a_dense_reading_the_text_input_of_a_two_input_model_gets_an_embedding_that_trains():
    spec = {
        "inputs": {"features": {}, "review": {"tokens": True}},
        "nodes": [
            n("text_fc", "linear", ["input:review"], out_features=8),
            n("num_fc", "linear", ["input"], out_features=8),
            n("join", "concat", ["text_fc", "num_fc"]),
            n("act", "activation", kind="relu"),
            n("head", "linear", out_features=2),
        ],
    }
    (finding,) = [f for f in lint(spec, MIXED, {}) if f.rule == "tokens_without_embedding"]
    assert finding.node_id == "text_fc"
    fixed, _ = finding.fix(spec, {})
    assert not lint(fixed, MIXED, {})
    embed = next(x for x in fixed["nodes"] if x["op"] == "embedding")
    assert embed["inputs"] == ["input:review"] and embed["params"]["num_embeddings"] == 40
    import torch

    from engine.compiler import compile_spec

    model, _ = compile_spec(fixed, data_inputs(MIXED))
    rows = torch.cat(
        [torch.randn(5, 4), torch.randint(0, 40, (5, 12)).float()], 1
    )  # as the dataset stores them
    assert model(rows).shape == (5, 2)
