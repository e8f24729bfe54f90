import json

import pytest
import torch
from torch import nn

from engine.compiler import analyse, compile_spec, infer_shapes
from engine.errors import SpecError
from engine.spec import insert_node, move_node, parse_spec, remove_node, set_params, starter_spec
from tests.conftest import mlp_spec


def test_spec_round_trips_through_json_with_defaults_explicit():
    spec = parse_spec(mlp_spec(3))
    data = json.loads(spec.to_json())
    assert data["version"] == 2 and data["inputs"] == {"features": {"shape": None, "tokens": False}}
    assert data["nodes"][0]["params"] == {"out_features": 32, "bias": True, "init": "default"}
    assert data["nodes"][1]["params"] == {"kind": "relu", "negative_slope": 0.01}
    assert parse_spec(data) == spec


def test_design_doc_example_with_a_residual_add():
    spec = {
        "version": 1,
        "nodes": [
            {"id": "fc1", "op": "linear", "params": {"out_features": 64}},
            {"id": "act1", "op": "activation", "params": {"kind": "relu"}},
            {"id": "fc2", "op": "linear", "params": {"out_features": 64}},
            {"id": "skip", "op": "add", "inputs": ["act1", "fc2"]},
            {"id": "head", "op": "linear", "params": {"out_features": 3}},
        ],
    }
    model, infos = compile_spec(spec, (5,), seed=0)
    assert [i.output_shape for i in infos][-2:] == [(64,), (3,)]
    x = torch.randn(4, 5)
    a = torch.relu(model.layers["fc1"](x))
    expected = model.layers["head"](a + model.layers["fc2"](a))
    assert torch.allclose(model(x), expected)


def test_unknown_op_lists_the_known_ones():
    with pytest.raises(SpecError) as e:
        parse_spec({"nodes": [{"id": "x", "op": "conv9d"}]})
    assert (
        e.value.node_id == "x"
        and "unknown op 'conv9d'" in str(e.value)
        and "conv2d" in str(e.value)
    )


def test_forward_references_run_in_dependency_order():
    spec = {
        "nodes": [
            {"id": "head", "op": "linear", "params": {"out_features": 2}, "inputs": ["body"]},
            {"id": "body", "op": "linear", "params": {"out_features": 4}, "inputs": ["input"]},
        ],
        "output": "head",
    }
    model, _ = compile_spec(spec, (3,))
    assert model(torch.randn(5, 3)).shape == (5, 2)


@pytest.mark.parametrize(
    "spec, node, words",
    [
        ({"nodes": []}, None, "no layers"),
        (
            {"nodes": [{"id": "a", "op": "linear", "params": {"out_features": 0}}]},
            "a",
            "greater than or equal to 1",
        ),
        ({"nodes": [{"id": "a", "op": "linear", "params": {"units": 3}}]}, "a", "units"),
        (
            {"nodes": [{"id": "a", "op": "linear"}, {"id": "a", "op": "linear"}]},
            "a",
            "share this id",
        ),
        (
            {"nodes": [{"id": "a", "op": "linear", "inputs": ["zz"]}, {"id": "b", "op": "linear"}]},
            "a",
            "neither an input nor a node",
        ),
        (
            {"nodes": [{"id": "a", "op": "linear", "inputs": ["b"]}, {"id": "b", "op": "linear"}]},
            "a",
            "cycle (a → b → a)",
        ),
        ({"nodes": [{"id": "bad.id", "op": "linear"}]}, "bad.id", "letters, digits"),
        ({"version": 7, "nodes": [{"id": "a", "op": "linear"}]}, None, "version 7"),
    ],
)
def test_bad_specs_name_the_node_and_the_fix(spec, node, words):
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    assert e.value.node_id == node
    assert words in str(e.value)


def test_invalid_json_text():
    with pytest.raises(SpecError, match="not valid JSON"):
        parse_spec("{nodes: oops")


def test_shapes_and_params_on_meta_device():
    infos = infer_shapes(mlp_spec(3), (4,))
    assert [i.output_shape for i in infos] == [(32,), (32,), (32,), (32,), (3,)]
    assert [i.params for i in infos] == [4 * 32 + 32, 0, 32 * 32 + 32, 0, 32 * 3 + 3]


def test_stack_that_does_not_fit_errors_at_the_offending_layer():
    spec = {"nodes": [{"id": "dense_1", "op": "linear"}, {"id": "out", "op": "linear"}]}
    infos, err = analyse(spec, (1, 8, 8))
    assert infos == [] and err.node_id == "dense_1"
    assert "Flatten" in err.message and "(1, 8, 8)" in err.message
    spec["nodes"].insert(0, {"id": "flat", "op": "flatten"})
    infos, err = analyse(spec, (1, 8, 8))
    assert err is None and infos[-1].output_shape == (64,) and infos[0].output_shape == (64,)


def test_a_graph_that_does_not_parse_is_reported_not_raised_and_shapes_are_remembered_per_spec():
    """The Build page draws a merge left with one input (while its inputs are being picked): analyse reports it,
    with the shapes of every layer that does not depend on it."""
    spec = mlp_spec(3)
    spec["nodes"].append({"id": "sum", "op": "add", "inputs": ["fc2"]})
    infos, err = analyse(spec, (4,))
    assert err.node_id == "sum" and "takes 2-8 inputs" in err.message
    assert [i.id for i in infos] == [n["id"] for n in mlp_spec(3)["nodes"]]
    with pytest.raises(SpecError, match="takes 2-8 inputs"):
        infer_shapes(spec, (4,))
    first, _ = analyse(mlp_spec(3), (4,))
    again, _ = analyse(mlp_spec(3), (4,))
    assert first == again and first is not again  # the same shapes, in a list of the caller's own
    assert (
        analyse(mlp_spec(3), (5,))[0][0].params == 5 * 32 + 32
    )  # another input shape: analysed again


def test_compiled_model_equals_hand_written_sequential():
    model, _ = compile_spec(mlp_spec(3), (4,), seed=1)
    ref = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))
    ref.load_state_dict(
        {
            k.replace("layers.", "").replace("fc1", "0").replace("fc2", "2").replace("head", "4"): v
            for k, v in model.state_dict().items()
        }
    )
    x = torch.randn(16, 4)
    assert torch.equal(model(x), ref(x))
    assert list(model.state_dict()) == [
        "layers.fc1.weight",
        "layers.fc1.bias",
        "layers.fc2.weight",
        "layers.fc2.bias",
        "layers.head.weight",
        "layers.head.bias",
    ]


def test_branches_joined_by_concat():
    spec = {
        "nodes": [
            {"id": "a", "op": "linear", "params": {"out_features": 5}},
            {"id": "b", "op": "linear", "params": {"out_features": 6}, "inputs": ["input"]},
            {"id": "j", "op": "concat", "inputs": ["a", "b"]},
        ]
    }
    model, infos = compile_spec(spec, (3,))
    assert not model.chain
    x = torch.randn(2, 3)
    assert torch.equal(model(x), torch.cat([model.layers["a"](x), model.layers["b"](x)], 1))
    assert {i.id: i.output_shape for i in infos} == {"a": (5,), "b": (6,), "j": (11,)}
    # An unused branch does not run: with `a` as the output the model is a plain chain again.
    spec["output"] = "a"
    assert compile_spec(spec, (3,))[0].chain


def test_with_output_shares_weights():
    model, _ = compile_spec(mlp_spec(3), (4,), seed=0)
    logits = model.with_output("fc2")
    assert logits.layers["fc1"] is model.layers["fc1"]
    assert logits(torch.randn(2, 4)).shape == (2, 32)


def test_macs_and_memory_estimate():
    from engine.compiler import memory_estimate

    infos = infer_shapes(mlp_spec(3), (4,))
    assert [i.macs for i in infos] == [4 * 32, 0, 32 * 32, 0, 32 * 3]
    conv = infer_shapes(
        {"nodes": [{"id": "c", "op": "conv2d", "params": {"out_channels": 8, "kernel_size": 3}}]},
        (2, 5, 5),
    )
    assert conv[0].macs == 8 * 2 * 9 * 25
    mem = memory_estimate(infos, batch_size=10, optimizer="adam")
    params = sum(i.params for i in infos)
    assert mem["weights"] == mem["gradients"] == params * 4 and mem["optimizer state"] == params * 8
    assert mem["activations"] == (32 + 32 + 32 + 32 + 3) * 10 * 2 * 4
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")


def test_input_shape_mismatch_is_explained():
    with pytest.raises(SpecError, match="expects input 'features' of shape"):
        compile_spec(
            {"inputs": {"features": {"shape": [5]}}, "nodes": [{"id": "a", "op": "linear"}]}, (4,)
        )


def test_editing_functions():
    spec = starter_spec("classification", (2,), 2)
    assert [n["id"] for n in spec["nodes"]] == ["dense_1", "relu_1", "dense_2", "relu_2", "output"]
    spec, new = insert_node(spec, "dropout", 2)
    assert new == "dropout_1" and spec["nodes"][2]["params"] == {"p": 0.5}
    spec = move_node(spec, "dropout_1", 4)
    assert [n["id"] for n in spec["nodes"]][4] == "dropout_1"
    spec = set_params(spec, "dropout_1", {"p": 0.2})
    assert parse_spec(spec).nodes[4].params == {"p": 0.2}
    spec = remove_node(spec, "dropout_1")
    assert "dropout_1" not in [n["id"] for n in spec["nodes"]]
    assert starter_spec("classification", (1, 8, 8), 10)["nodes"][0]["op"] == "flatten"
    text_spec, emb = insert_node(spec, "embedding", 0, {"vocab_size": 40})
    assert (
        text_spec["nodes"][0]["params"]["num_embeddings"] == 40
    )  # taken from the dataset's vocabulary
    assert starter_spec("regression", (10,), None)["nodes"][-1]["params"]["out_features"] == 1


def test_weight_initialization_is_a_layer_choice_carried_into_model_py():
    import torch

    from engine.codegen import model_code
    from engine.compiler import compile_spec
    from engine.spec import parse_spec

    spec = parse_spec(
        {
            "nodes": [
                {"id": "a", "op": "linear", "params": {"out_features": 64, "init": "orthogonal"}},
                {
                    "id": "b",
                    "op": "linear",
                    "params": {"out_features": 64, "init": "kaiming_normal"},
                },
                {"id": "c", "op": "linear", "params": {"out_features": 3}},
            ]
        }
    )
    torch.manual_seed(0)
    model, _ = compile_spec(spec, {"features": (64,)})
    a, b = model.layers["a"], model.layers["b"]
    assert torch.allclose(a.weight @ a.weight.T, torch.eye(64), atol=1e-4) and not a.bias.any()
    assert abs(b.weight.std().item() - (2 / 64) ** 0.5) < 0.02 and not b.bias.any()
    assert model.layers["c"].bias.any()  # default: PyTorch's own
    code = model_code(model)
    assert (
        "initialize(nn.Linear(64, 64, bias=True), 'orthogonal')" in code
        and "def initialize(" in code
    )
    namespace: dict = {}
    exec(compile(code, "model.py", "exec"), namespace)  # noqa: S102 - our own generated code
    torch.manual_seed(0)
    rebuilt = namespace["Model"]()
    assert all(
        torch.equal(x, y)
        for x, y in zip(rebuilt.state_dict().values(), model.state_dict().values(), strict=True)
    )  # the same draws: model.py builds the same model
    with pytest.raises(Exception, match="init"):
        parse_spec(
            {"nodes": [{"id": "a", "op": "linear", "params": {"out_features": 2, "init": "magic"}}]}
        )
