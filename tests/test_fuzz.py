"""Property-based tests of the readers and the weights loader: random bytes, truncated files and mutated headers
end in a LayerLabError (a message for the user) or a result, never in another exception.

CI runs a bounded number of examples per test (the "ci" profile in tests/conftest.py); for a longer hunt:
`.venv/bin/python -m pytest tests/test_fuzz.py --hypothesis-profile=thorough`.
"""

import io
import json
import tarfile
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from engine.data.images import read_image_archive
from engine.data.pickle_walk import read_pickle
from engine.data.readers import read_table
from engine.errors import LayerLabError
from engine.export import read_weights, stored_weights
from engine.predict import load_predictor

SLOW = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _table_files() -> dict[str, bytes]:
    frame = pd.DataFrame(
        {"x": [1.5, 2.0, None, 4.0] * 5, "c": ["a", "b", "c", "a"] * 5, "y": [0, 1] * 10}
    )
    files = {
        "t.csv": frame.to_csv(index=False).encode(),
        "t.jsonl": frame.to_json(orient="records", lines=True).encode(),
    }
    buf = io.BytesIO()
    frame.to_parquet(buf)
    files["t.parquet"] = buf.getvalue()
    buf = io.BytesIO()
    frame.to_excel(buf, index=False)
    files["t.xlsx"] = buf.getvalue()
    return files


TABLES = _table_files()


def _archive_files() -> dict[str, bytes]:
    from tests.test_images import shapes_zip

    files = {"s.zip": shapes_zip(12)}
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(files["s.zip"])) as zf,
        tarfile.open(fileobj=buf, mode="w:gz") as tf,
    ):
        for info in zf.infolist():
            entry = tarfile.TarInfo(info.filename)
            data = zf.read(info)
            entry.size = len(data)
            tf.addfile(entry, io.BytesIO(data))
    files["s.tar.gz"] = buf.getvalue()
    return files


def mutated(data: bytes, draw) -> bytes:
    """Cut short, bytes overwritten or inserted, at places drawn near the start (headers) or anywhere."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["cut", "flip", "insert", "header"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "cut":
            data = data[:at]
        elif kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:  # the first bytes hold most formats' sizes and offsets
            pos = draw(st.integers(0, min(len(data), 64) - 1))
            data[pos : pos + 8] = draw(st.binary(min_size=8, max_size=8))
    return bytes(data)


def only_messages(fn, *args) -> None:
    try:
        fn(*args)
    except LayerLabError as e:
        assert str(e).strip()


@SLOW
@given(name=st.sampled_from(sorted(TABLES)), data=st.data())
def test_mutated_tables_are_read_or_refused_with_a_message(name, data):
    only_messages(read_table, mutated(TABLES[name], data.draw), name)


@SLOW
@given(
    raw=st.binary(max_size=2048),
    ext=st.sampled_from([".csv", ".tsv", ".parquet", ".xlsx", ".jsonl"]),
)
def test_random_bytes_as_tables_are_refused_with_a_message(raw, ext):
    only_messages(read_table, raw, "f" + ext)


@SLOW
@given(name=st.sampled_from(["s.zip", "s.tar.gz"]), data=st.data())
def test_mutated_image_archives_are_read_or_refused_with_a_message(name, data):
    only_messages(read_image_archive, mutated(ARCHIVES[name], data.draw), name, 8)


@pytest.fixture(scope="module")
def weights() -> bytes:
    return save(
        {"layers.fc.weight": torch.randn(4, 3), "layers.fc.bias": torch.zeros(4)},
        metadata={"spec": "{}"},
    )


@SLOW
@given(data=st.data())
def test_mutated_weights_are_loaded_or_refused_with_a_message(weights, data):
    raw = mutated(weights, data.draw)
    only_messages(read_weights, raw)
    only_messages(load_predictor, raw, "model.safetensors")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("weights.safetensors", raw)
    only_messages(stored_weights, mutated(buf.getvalue(), data.draw), "bundle.zip")


@SLOW
@given(raw=st.binary(max_size=512))
def test_random_bytes_as_pickles_or_weights_are_refused_with_a_message(raw):
    only_messages(read_pickle, raw, "batch")
    only_messages(read_weights, raw)


def test_the_fuzzed_files_are_valid_before_mutation():
    """The seeds are real files: each reads as it should, so mutations start from something that works."""
    for name, data in TABLES.items():
        assert read_table(data, name).frame.shape == (20, 3)
    for name, data in ARCHIVES.items():
        assert len(read_image_archive(data, name, 8).labels) == 12
    assert np.isfinite(read_weights(save({"w": torch.ones(2)}))[0]["w"].numpy()).all()


ARCHIVES = _archive_files()


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@SLOW
@given(
    doc=st.fixed_dictionaries(
        {
            "nodes": st.lists(
                st.fixed_dictionaries(
                    {
                        "id": st.sampled_from(["a", "b", "c"]),
                        "op": st.sampled_from(["linear", "activation", "concat", "embedding", "x"]),
                        "params": st.dictionaries(
                            st.sampled_from(["out_features", "kind", "num_embeddings", "dim"]),
                            JSON,
                            max_size=2,
                        ),
                    },
                    optional={
                        "inputs": st.lists(
                            st.sampled_from(["a", "b", "c", "input", "input:x"]), max_size=3
                        )
                    },
                ),
                max_size=4,
            )
        },
        optional={"version": JSON, "inputs": JSON, "output": JSON},
    )
)
def test_hostile_specs_are_built_or_refused_with_a_message(doc):
    from engine.compiler import compile_spec
    from engine.spec import parse_spec

    try:
        compile_spec(parse_spec(json.dumps(doc)), {"features": (4,)})
    except LayerLabError as e:
        assert str(e).strip()


def test_a_deeply_nested_or_huge_spec_is_refused_with_a_message():
    from engine.spec import parse_spec

    with pytest.raises(LayerLabError, match="nests lists or objects too deeply"):
        parse_spec("[" * 100_000)
    with pytest.raises(LayerLabError, match="1,001 layers; LayerLab builds at most 1,000"):
        parse_spec(
            json.dumps(
                {
                    "nodes": [
                        {"id": f"n{i}", "op": "linear", "params": {"out_features": 2}}
                        for i in range(1001)
                    ]
                }
            )
        )


CELLS = st.sampled_from(
    [
        "1",
        "2.5",
        "-3",
        "abc",
        "",
        "inf",
        "-inf",
        "nan",
        "x y z w v",
        "1e308",
        "TRUE",
        "no",
        "2024-01-01",
        '"q,uoted"',
        "Zürich",
        "=1+1",
    ]
)
NAMES = st.sampled_from(["a", " a", "a ", "1", "y", "y", "", "label", "id", "é", "a.1"])


@SLOW
@given(names=st.lists(NAMES, min_size=1, max_size=5), rows=st.integers(0, 40), data=st.data())
def test_hostile_small_tables_are_prepared_or_refused_with_a_message(names, rows, data, tmp_path):
    """Odd headers (repeats, blanks, trimmed repeats) and odd cells (inf, huge, text in numbers, dates): reading,
    preparing, the health report and saving end in a dataset or a message, never another exception."""
    from engine.data.prepare import prepare_file

    lines = [",".join(names)] + [
        ",".join(data.draw(st.lists(CELLS, min_size=len(names), max_size=len(names))))
        for _ in range(rows)
    ]
    raw = ("\n".join(lines) + "\n").encode()
    try:
        frame = read_table(raw, "t.csv").frame
        prepare_file(raw, "t.csv", frame.columns[-1], root=tmp_path)
    except LayerLabError as e:
        assert str(e).strip()
