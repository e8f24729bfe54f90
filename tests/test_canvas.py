"""The canvas's edits as spec edits, shape-aware connections, one-click fixes, and the exported diagram."""

import json
from types import SimpleNamespace

from engine import canvas, diagram
from engine.cli import main
from engine.compiler import analyse, compile_spec
from engine.spec import parse_spec, starter_spec

TABLE = {"input_shape": [2], "task": "classification", "num_classes": 2}
IMAGE = {"input_shape": [1, 8, 8], "task": "classification", "num_classes": 3}


def wires(spec):
    return {n["id"]: n["inputs"] for n in spec["nodes"]}


def test_a_residual_block_built_by_gestures_compiles_and_keeps_the_output():
    spec = starter_spec("classification", [2], 2)
    spec, add = canvas.add_node(spec, "add", TABLE, at=[10, 20])
    assert wires(spec)["add_1"] == [] and wires(spec)["output"] == ["relu_2"]  # nothing else moved
    assert "has no input" in analyse(spec, [2])[1].message
    for src, dst in (("relu_2", add), ("relu_1", add), (add, "output")):
        spec = canvas.apply(spec, {"action": "connect", "src": src, "dst": dst}, TABLE)[0]
    assert analyse(spec, [2])[1] is None
    assert (
        wires(spec)["add_1"] == ["relu_2", "relu_1"] and wires(spec)["output"] is None
    )  # implicit again
    assert spec["layout"]["add_1"] == [10.0, 20.0]
    model, _ = compile_spec(spec, [2])
    assert model.plan[-1][0] == "output"
    # a connection back into an ancestor would be a cycle: refused
    assert (
        canvas.apply(spec, {"action": "connect", "src": "output", "dst": "dense_1"}, TABLE) is None
    )


def test_insert_on_an_edge_then_delete_an_edge_puts_the_error_on_the_right_node():
    spec = starter_spec("classification", [2], 2)
    spec, drop = canvas.apply(
        spec, {"action": "insert", "op": "dropout", "src": "relu_1", "dst": "dense_2"}, TABLE
    )
    order = [n["id"] for n in spec["nodes"]]
    assert order.index("relu_1") < order.index(drop) < order.index("dense_2")
    assert analyse(spec, [2])[1] is None
    cut, _ = canvas.apply(spec, {"action": "disconnect", "src": drop, "dst": "dense_2"}, TABLE)
    infos, error = analyse(cut, [2])
    assert error.node_id == "dense_2" and "has no input" in error.message
    assert {"dense_1", "relu_1", drop} <= {i.id for i in infos}  # shapes up to the cut still known
    assert canvas.unused(cut) == {"dense_1", "relu_1", drop}  # cut off from the output


def test_moves_and_layout_are_saved_but_do_not_change_the_model():
    spec = starter_spec("classification", [2], 2)
    moved, _ = canvas.apply(spec, {"action": "move", "positions": {"relu_1": [5, 7]}}, TABLE)
    assert moved["layout"]["relu_1"] == [5.0, 7.0] and set(moved["layout"]) >= {"input", "output"}
    again = parse_spec(json.loads(json.dumps(moved))).to_dict()
    assert again["layout"] == moved["layout"]
    assert "layout" not in parse_spec(spec).to_dict()  # a spec without one is written as before
    assert [i.params for i in analyse(moved, [2])[0]] == [i.params for i in analyse(spec, [2])[0]]
    auto, _ = canvas.apply(moved, {"action": "layout"}, TABLE)
    assert "layout" not in auto
    where = canvas.positions(auto, TABLE)
    assert [where[i][0] for i in ("input", "dense_1", "relu_1")] == sorted(
        where[i][0] for i in ("input", "dense_1", "relu_1")
    )  # left to right by depth
    odd, _ = canvas.apply(spec, {"action": "move", "positions": {"relu_1": ["x", 1]}}, TABLE)
    assert (
        odd["layout"]["relu_1"] == canvas.positions(spec, None)["relu_1"]
    )  # a bad place is ignored
    assert canvas.apply(spec, {"action": "nope"}, TABLE) is None
    assert canvas.apply(spec, {"action": "connect", "src": "ghost", "dst": "output"}, TABLE) is None


def test_dragged_connections_know_which_inputs_fit():
    spec = starter_spec("classification", [1, 8, 8], 3)
    spec, conv = canvas.insert_on_edge(spec, "conv2d", "input", "flatten", IMAGE)
    infos, error = analyse(spec, [1, 8, 8])
    assert error is None
    shapes = {"input": (1, 8, 8), **{i.id: i.output_shape for i in infos}}
    ok = canvas.accepts(spec, shapes)
    assert canvas.shape_key((1, 8, 8)) in ok[conv]  # a conv takes an image
    assert canvas.shape_key((64,)) not in ok[conv]  # but not a flat vector
    assert canvas.shape_key((64,)) in ok["output"]


def test_a_shape_that_does_not_fit_gets_fixes_that_work():
    spec = starter_spec("classification", [1, 8, 8], 3)
    spec, conv = canvas.insert_on_edge(spec, "conv2d", "input", "flatten", IMAGE)
    spec = canvas.remove_nodes(spec, ["flatten"])
    error = analyse(spec, [1, 8, 8])[1]
    assert error.node_id == "dense_1"
    found = canvas.fixes(spec, IMAGE, error.node_id)
    assert found and found[0]["label"].startswith("Insert Flatten before 'dense_1'")
    for fix in found:
        assert analyse(fix["spec"], [1, 8, 8])[1] is None, fix["label"]
    # an Add of 64 and 16 features: a Dense on the narrow input makes them match
    mlp = starter_spec("classification", [2], 2)
    mlp["nodes"][2]["params"]["out_features"] = 16
    mlp, add = canvas.add_node(mlp, "add", TABLE)
    mlp = canvas.connect(canvas.connect(mlp, "relu_2", add), "relu_1", add)
    mlp = canvas.connect(mlp, add, "output")
    assert analyse(mlp, [2])[1].node_id == add
    labels = {f["label"]: f for f in canvas.fixes(mlp, TABLE, add)}
    match = [k for k in labels if k.startswith("Insert a Dense to match 64 features")]
    assert match and analyse(labels[match[0]]["spec"], [2])[1] is None


def test_the_diagram_draws_every_layer_in_svg_and_png(tmp_path):
    spec, add = canvas.add_node(starter_spec("classification", [2], 2), "add", TABLE)
    spec = canvas.connect(
        canvas.connect(canvas.connect(spec, "relu_2", add), "relu_1", add), add, "output"
    )
    text = diagram.svg(spec, TABLE)
    for node in ["input", *[n["id"] for n in spec["nodes"]]]:
        assert f'data-id="{node}"' in text
    assert (
        text.count("<path") == 1 + 7
    )  # the arrowhead, then one curve per edge (5 in the chain + 1 skip + input)
    assert "(64,)" in text and "(2,)" in text
    png = diagram.png(spec, TABLE)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_the_diagram_from_the_command_line(tmp_path, capsys):
    spec = starter_spec("classification", [2], 2)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))

    def cli(*args):
        code = main(["diagram", *args])
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    done = cli(str(path), "--out", str(tmp_path / "m.svg"), "--input-shape", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["layers"] == 5
    assert 'data-id="relu_2"' in (tmp_path / "m.svg").read_text()
    refused = cli(str(path), "--out", str(tmp_path / "m.svg"))
    assert refused.returncode == 2 and "--input-shape" in refused.stderr
    refused = cli(str(path), "--out", str(tmp_path / "m.pdf"), "--input-shape", "2")
    assert refused.returncode == 2 and ".svg or .png" in refused.stderr
    (tmp_path / "bad.json").write_text("{nope")
    refused = cli(
        str(tmp_path / "bad.json"), "--out", str(tmp_path / "m.png"), "--input-shape", "2"
    )
    assert refused.returncode == 2 and "not valid JSON" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_junk_gestures_change_nothing_and_raise_nothing():
    spec = starter_spec("classification", [2], 2)
    junk = [
        None,
        [],
        {"action": ["connect"]},
        {"action": "connect", "src": ["relu_1"], "dst": {"x": 1}},
        {"action": "insert", "op": "no_such_op", "src": "relu_1", "dst": "dense_2"},
        {"action": "insert", "op": "dropout", "src": "output", "dst": "dense_1"},
        {"action": "add", "op": 5, "at": [float("nan"), 1]},
        {"action": "remove", "ids": [["output"], None, 3]},
        {"action": "move", "positions": {"relu_1": [float("inf"), 0], "ghost": [1, 2]}},
        {"action": "disconnect", "src": "input", "dst": "output"},
    ]
    for event in junk:
        done = canvas.apply(spec, event, TABLE)
        if done is not None:  # a move with nothing valid in it only saves the places
            assert [n["id"] for n in done[0]["nodes"]] == [n["id"] for n in spec["nodes"]]
            assert "ghost" not in (done[0].get("layout") or {})
