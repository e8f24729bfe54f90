"""Real data in: every table format, column plans, text, the health report, class weights, replayed preprocessing."""

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from engine.data.health import class_weights
from engine.data.prepare import prepare_file, prepare_frame
from engine.data.readers import MAX_COLUMNS, read_table
from engine.data.tabular import (
    ColumnPlan,
    TextOptions,
    apply_preprocessing,
    split_indices,
    suggest_columns,
    suggest_target,
    target_problem,
)
from engine.errors import DataError
from engine.train import TrainConfig, fit
from tests.conftest import mlp_spec


def frame(rows: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "customer_id": np.arange(1000, 1000 + rows),
            "age": rng.normal(40, 10, rows).round(1),
            "city": rng.choice(["Paris", "Oslo", "Zürich"], rows),
            "member": rng.choice([True, False], rows),
            "country": ["FR"] * rows,
            "spend": rng.gamma(2, 50, rows).round(2),
        }
    )
    df["bought"] = np.where(df["age"] + rng.normal(0, 5, rows) > 40, "yes", "no")
    df.loc[[3, 7], "age"] = np.nan
    return df


def as_bytes(df: pd.DataFrame, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "csv":
        return df.to_csv(index=False).encode()
    if fmt == "csv-bom":
        return b"\xef\xbb\xbf" + df.to_csv(index=False).encode()
    if fmt == "latin1-semicolon":
        return df.to_csv(index=False, sep=";").encode("latin-1")
    if fmt == "tsv":
        return df.to_csv(index=False, sep="\t").encode()
    if fmt == "parquet":
        df.to_parquet(buf)
    elif fmt == "xlsx":
        df.to_excel(buf, index=False)
    elif fmt == "jsonl":
        return df.to_json(orient="records", lines=True).encode()
    return buf.getvalue()


EXT = {
    "csv": "csv",
    "csv-bom": "csv",
    "latin1-semicolon": "csv",
    "tsv": "tsv",
    "parquet": "parquet",
    "xlsx": "xlsx",
    "jsonl": "jsonl",
}


@pytest.mark.parametrize("fmt", sorted(EXT))
def test_every_table_format_reads_the_same_table(fmt):
    df = frame()
    source = read_table(as_bytes(df, fmt), f"people.{EXT[fmt]}")
    got = source.frame
    assert list(got.columns) == list(df.columns) and len(got) == len(df)
    assert list(got["city"]) == list(df["city"])  # "Zürich" survives every encoding
    assert np.allclose(got["spend"], df["spend"])
    if fmt == "latin1-semicolon":
        assert source.encoding == "latin-1" and source.delimiter == ";"
    if fmt == "csv-bom":
        assert source.encoding == "utf-8-sig"
    ds = prepare_file(as_bytes(df, fmt), f"people.{EXT[fmt]}", "bought")
    assert ds.meta["classes"] == ["no", "yes"]
    # The CSV reader gives categories as pandas categoricals, the others as strings: the tensors are the same.
    reference = prepare_frame(df.astype({"city": object}), "bought", name="people", source="test")
    for key, tensor in reference.tensors.items():
        assert torch.equal(ds.tensors[key], tensor), key


def test_quoted_newlines_and_late_odd_values_are_read_as_pandas_reads_them():
    rows = "".join(f'{i},"note {i}\nsecond line",{i % 3}\n' for i in range(30))
    got = read_table(("n,note,y\n" + rows).encode(), "notes.csv").frame
    assert got.shape == (30, 3) and got["note"][4] == "note 4\nsecond line"
    late = "v,y\n" + "".join(f"{i},{i % 2}\n" for i in range(5000)) + "unknown,1\n"
    got = read_table(late.encode(), "late.csv").frame
    assert len(got) == 5001 and got["v"].iloc[-1] == "unknown"


def test_split_is_stratified_seeded_and_disjoint():
    y = np.repeat([0, 1, 2], [700, 250, 50])
    a, b = (
        split_indices(len(y), y, True, 0.15, 0.15, seed=3),
        split_indices(len(y), y, True, 0.15, 0.15, seed=3),
    )
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(len(y)))
    for k, fraction in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        counts = np.bincount(y[a[k]], minlength=3)
        assert np.abs(counts - fraction * np.array([700, 250, 50])).max() <= 1, (k, counts)
    assert not np.array_equal(split_indices(len(y), y, True, 0.15, 0.15, seed=4)["test"], a["test"])


def test_delimiter_and_encoding_overrides():
    data = "a|b|y\n" + "".join(f"{i}|{i * 2}|{i % 2}\n" for i in range(20))
    assert list(read_table(data.encode(), "t.csv").frame.columns) == ["a", "b", "y"]
    assert (
        read_table(data.encode(), "t.csv", delimiter=",").frame.shape[1] == 1
    )  # the user's choice wins
    with pytest.raises(DataError, match="cannot be read as ascii"):
        read_table("é,y\n1,2\n".encode(), "t.csv", encoding="ascii")


@pytest.mark.parametrize(
    "data, name, words",
    [
        (b"PAR1 not really", "t.csv", "holds a Parquet file"),
        (b"a,b\n1,2\n", "t.parquet", "holds text"),
        (b"PK\x03\x04garbage", "t.xlsx", "is a damaged zip archive"),
        (b"\x80\x81\x82,b\n\x83,1\n", "t.csv", "neither UTF-8 nor Latin-1"),
        (b"a,b\n1,2\n", "t.exe", "does not read as a table"),
        (
            (
                ",".join(f"c{i}" for i in range(MAX_COLUMNS + 1))
                + "\n"
                + ",".join("1" * (MAX_COLUMNS + 1))
                + "\n"
            ).encode(),
            "wide.csv",
            "reads at most",
        ),
    ],
)
def test_bad_files_name_the_file_and_the_fix(data, name, words):
    with pytest.raises(DataError, match=words) as e:
        read_table(data, name)
    assert name in str(e.value)


def test_column_suggestions_flag_ids_and_constants():
    plans = {p.name: p for p in suggest_columns(frame(), "bought")}
    assert plans["customer_id"].role == "ignore" and "ID" in plans["customer_id"].note
    assert plans["country"].role == "ignore" and "constant" in plans["country"].note
    assert plans["age"].kind == "numeric" and plans["city"].kind == "categorical"
    assert plans["member"].kind == "boolean"


def test_names_and_codes_that_repeat_now_and_then_are_ignored_but_free_text_and_categories_stay():
    """Real tables (Titanic, Palmer penguins' raw file): a passenger's full name, a ticket code, an individual's ID
    that recurs a few times. None is unique per row, so the ID rule missed them; one-hot or as tokens they let the
    model memorise rows."""
    rng = np.random.default_rng(0)
    rows = 300
    first = ["Anna", "Karl", "Mia", "Olof", "Lena", "Ivar", "Sara", "Nils"]
    df = pd.DataFrame(
        {
            "Name": [f"{rng.choice(first)} {i}, Mr. {rng.choice(first)} Holm" for i in range(rows)],
            "Ticket": [f"PC {rng.integers(100, 99999)}" for _ in range(rows)],
            "Individual ID": [
                f"N{i // 2}A{i % 2 + 1}" if i % 3 else f"N{i // 3}A1" for i in range(rows)
            ],
            "Embarked": rng.choice(["S", "C", "Q"], rows),
            "Review": [
                " ".join(
                    rng.choice(["good", "bad", "fine", "tasty", "cold", "the", "food", "was"], 14)
                )
                for _ in range(rows)
            ],
            "Tip": [
                " ".join(
                    rng.choice(["great", "slow", "friendly", "staff", "cold", "soup", "nice"], 6)
                )
                + f" {i}"
                for i in range(rows)
            ],  # short reviews, different in every row: still text to learn from
            "Fare": rng.gamma(2, 20, rows),
            "Survived": rng.integers(0, 2, rows),
        }
    )
    plans = {p.name: p for p in suggest_columns(df, "Survived")}
    for col in ("Name", "Ticket", "Individual ID"):
        assert plans[col].role == "ignore" and (
            "ID" in plans[col].note or "names or codes" in plans[col].note
        ), (col, plans[col])
    assert plans["Embarked"].role == "feature" and plans["Embarked"].kind == "categorical"
    assert plans["Review"].role == "feature" and plans["Review"].kind == "text"
    assert plans["Tip"].role == "feature" and plans["Tip"].kind == "text"
    assert plans["Fare"].role == "feature"


def test_constant_pixels_are_kept_where_positions_matter():
    rng = np.random.default_rng(0)
    pixels = pd.DataFrame(rng.integers(0, 255, (50, 64)), columns=[f"px{i}" for i in range(64)])
    pixels["px0"] = 0  # a border pixel that is always dark
    pixels["label"] = rng.integers(0, 3, 50)
    plan = {p.name: p for p in suggest_columns(pixels, "label")}["px0"]
    assert plan.role == "feature" and "pixels" in plan.note


def test_the_suggested_target_is_never_mostly_empty_free_text_or_an_id():
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame(
        {
            "passenger_id": [f"P{i:05d}" for i in range(n)],
            "age": rng.normal(30, 8, n),
            "species": rng.choice(["Adelie", "Gentoo"], n),
            "comments": [None] * 168
            + [f"the bird looked tired on day {i} of the trip" for i in range(32)],
        }
    )
    assert suggest_target(df) == "species"  # the last column is 84%-empty free text
    assert "84% empty" in target_problem(df["comments"])
    df2 = df.rename(columns={"species": "kind"}).assign(
        notes=[f"seen near rock {i} with many others" for i in range(n)]
    )
    assert (
        suggest_target(df2) == "kind"
    )  # no target-like name: the last sound column, not the free text
    assert "free text" in target_problem(df2["notes"])
    assert "like an ID" in target_problem(df["passenger_id"])
    assert target_problem(df["species"]) is None and target_problem(df["age"]) is None
    with_label = df.assign(label=rng.choice(["a", "b"], n), extra=rng.normal(0, 1, n))
    assert suggest_target(with_label) == "label"  # named like a target, though not last


def test_health_fixes_prepare_the_kept_file_again(workspace):
    from engine.data.prepare import can_prepare_again, prepare_again, prepare_file

    df = frame(120).assign(blank=np.where(np.arange(120) < 100, np.nan, 1.0))
    df = pd.concat([df, df.iloc[:10]], ignore_index=True)  # 10 duplicate rows
    plans = [
        p.model_copy(update={"role": "feature"}) for p in suggest_columns(df, "bought")
    ]  # keep everything
    ds = prepare_file(as_bytes(df, "csv"), "people.csv", "bought", plans=plans)
    assert can_prepare_again(ds)
    fixes = {
        f["kind"] + ":" + ",".join(f.get("columns", [])): f for f in ds.meta["health"]["fixes"]
    }
    assert set(fixes) == {"drop_duplicates:", "ignore:country", "ignore:blank"}, fixes
    fixed = prepare_again(ds, ignore=fixes["ignore:country"]["columns"])
    assert "country" not in fixed.meta["feature_names"] and "blank" in fixed.meta["feature_names"]
    assert "country" not in fixed.meta["health"]["constant_columns"]
    again = prepare_again(fixed, drop_duplicates=True)
    assert again.meta["health"]["duplicate_rows"] == 0
    assert sum(again.meta["sizes"].values()) == sum(fixed.meta["sizes"].values()) - 10
    assert any("Dropped 10 duplicate row(s)" in n for n in again.meta["notices"])
    assert "country" not in again.meta["feature_names"]  # the earlier fix is kept


def test_column_plan_strategies_and_replay_on_new_rows():
    df = frame(120)
    plans = [
        ColumnPlan(name="customer_id", role="ignore"),
        ColumnPlan(name="country", role="ignore"),
        ColumnPlan(name="age", kind="numeric", missing="mean", scaling="minmax"),
        ColumnPlan(
            name="city",
            kind="categorical",
            missing="most_frequent",
            scaling="none",
            encoding="index",
        ),
        ColumnPlan(name="member", kind="boolean", missing="most_frequent", scaling="none"),
        ColumnPlan(
            name="spend", kind="numeric", missing="constant", fill_value="0", scaling="standard"
        ),
    ]
    ds = prepare_frame(df, "bought", name="people", source="test", plans=plans)
    pre = ds.meta["preprocessing"]
    assert ds.meta["feature_names"] == ["age", "city", "member", "spend"]
    x = ds.tensors["x_train"].numpy()
    assert (
        x[:, 0].min() >= 0 and abs(x[:, 0].max() - 1) < 1e-6
    )  # min-max fitted on the training rows
    assert set(np.unique(x[:, 1])) <= {1.0, 2.0, 3.0}  # category indices, 0 kept for unseen
    assert set(np.unique(x[:, 2])) <= {0.0, 1.0}
    # The JSON state replays: the same rows give the same tensors, unseen categories give index 0.
    train_rows = df.iloc[:0]
    assert apply_preprocessing(train_rows, pre).shape == (0, 4)
    new = pd.DataFrame(
        {
            "age": [30.0, None],
            "city": ["Rome", "Oslo"],
            "member": [True, False],
            "spend": [10.0, None],
        }
    )
    out = apply_preprocessing(new, json.loads(json.dumps(pre)))
    assert out[0, 1] == 0 and out[1, 1] == pre["columns"][1]["categories"].index("Oslo") + 1
    assert out[1, 0] == pytest.approx(
        (pre["columns"][0]["fill"] - pre["columns"][0]["shift"]) / pre["columns"][0]["scale"]
    )


def test_saved_preprocessing_on_the_original_rows_equals_the_training_tensors():
    df = frame(100)
    ds = prepare_frame(df, "bought", name="people", source="test")
    raw = pd.read_csv(ds.path / "preview.csv")
    full = apply_preprocessing(raw, ds.meta["preprocessing"])
    # Every training tensor row is exactly what the saved JSON gives for some original row.
    rows = {r.tobytes() for r in full}
    assert all(r.tobytes() in rows for r in ds.tensors["x_train"].numpy())


def test_drop_strategy_removes_rows_and_refuses_gaps_later():
    df = frame(100)
    plans = [
        p.model_copy(update={"missing": "drop"}) if p.name == "age" else p
        for p in suggest_columns(df, "bought")
    ]
    ds = prepare_frame(df, "bought", name="p", source="t", plans=plans)
    assert sum(ds.meta["sizes"].values()) == 98 and any(
        "Dropped 2 row(s)" in n for n in ds.meta["notices"]
    )
    with pytest.raises(DataError, match="rows were dropped in training"):
        apply_preprocessing(
            pd.DataFrame(
                {
                    "age": [None],
                    "city": ["Oslo"],
                    "member": [True],
                    "country": ["FR"],
                    "spend": [1.0],
                }
            ),
            ds.meta["preprocessing"],
        )


def test_text_column_becomes_tokens_with_a_saved_vocabulary():
    rng = np.random.default_rng(0)
    good, bad = ["great", "love", "fine"], ["awful", "hate", "broken"]
    texts, labels = [], []
    for _ in range(300):
        pos = rng.random() < 0.5
        words = list(rng.choice(good if pos else bad, 3)) + list(
            rng.choice(["the", "film", "was", "a", "plot"], 6)
        )
        rng.shuffle(words)
        texts.append(" ".join(words).capitalize() + "!")
        labels.append("pos" if pos else "neg")
    df = pd.DataFrame({"review": texts, "label": labels})
    assert {p.name: p.kind for p in suggest_columns(df, "label")}["review"] == "text"
    ds = prepare_frame(
        df, "label", name="reviews", source="t", text=TextOptions(vocab_size=50, max_length=12)
    )
    assert ds.input_shape == (12,) and ds.meta["vocab"][:2] == ["<pad>", "<unk>"]
    assert "great" in ds.meta["vocab"] and ds.meta["vocab_size"] == len(ds.meta["vocab"]) <= 50
    ids = apply_preprocessing(
        pd.DataFrame({"review": ["GREAT film, zebra"]}), ds.meta["preprocessing"]
    )[0]
    vocab = ds.meta["vocab"]
    assert [vocab[int(i)] for i in ids[:3]] == ["great", "film", "<unk>"] and ids[3:].sum() == 0
    from engine.templates import build

    result = fit(
        build("lstm_text", ds.meta), ds, TrainConfig(epochs=8, lr=0.005), emit=lambda e: None
    )
    assert result["metrics"]["val/accuracy"] > 0.9


def test_health_report_finds_imbalance_duplicates_leakage_and_dead_columns():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "a": rng.normal(size=200),
            "b": rng.normal(size=200),
            "const": 1.0,
            "sparse": [np.nan] * 150 + list(range(50)),
            "y": ["rare"] * 20 + ["common"] * 180,
        }
    )
    df = pd.concat(
        [df, df.iloc[:30]], ignore_index=True
    )  # exact duplicates: some land in different splits
    plans = [p.model_copy(update={"role": "feature"}) for p in suggest_columns(df, "y")]
    ds = prepare_frame(df, "y", name="h", source="t", plans=plans)
    h = ds.meta["health"]
    assert h["duplicate_rows"] == 30 and h["leakage"]["val"] + h["leakage"]["test"] > 0
    assert h["constant_columns"] == ["const"] and h["mostly_missing_columns"] == ["sparse"]
    assert h["imbalance_ratio"] > 3 and "imbalanced" in " ".join(h["warnings"])
    counts = h["class_counts"]
    weights = dict(zip(ds.meta["classes"], h["class_weights"], strict=True))
    assert weights["rare"] > weights["common"]
    n = sum(counts.values())
    assert weights["rare"] == pytest.approx(n / (2 * counts["rare"]))
    healthy = prepare_frame(frame(), "bought", name="ok", source="t").meta["health"]
    assert healthy["duplicate_rows"] == 0 and healthy["leakage"] == {"val": 0, "test": 0}


def test_class_weights_shift_predictions_toward_the_rare_class(tmp_path):
    from engine.export import load_model

    assert class_weights(np.array([0, 0, 0, 1]), 2) == [pytest.approx(4 / 6), pytest.approx(2.0)]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 2))
    y = np.where(x[:, 0] + rng.normal(0, 0.7, 1500) > 1.3, "rare", "common")
    ds = prepare_frame(
        pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": y}), "y", name="imb", source="t"
    )
    rare = ds.meta["classes"].index("rare")
    x_val, y_val = ds.split("val")
    predicted_rare = {}
    for weighted in (False, True):
        fit(
            mlp_spec(2),
            ds,
            TrainConfig(epochs=15, lr=0.01, class_weights=weighted),
            emit=lambda e: None,
            out_dir=tmp_path / str(weighted),
        )
        model, _ = load_model(tmp_path / str(weighted) / "model.safetensors")
        with torch.no_grad():
            pred = model(x_val).argmax(1)
        predicted_rare[weighted] = (
            (pred == rare).sum().item(),
            ((pred == rare) & (y_val == rare)).sum().item(),
        )
    # Weighting the rare class makes the model predict it more often and find more of the true rare rows.
    assert predicted_rare[True][0] > predicted_rare[False][0]
    assert predicted_rare[True][1] >= predicted_rare[False][1]


def test_text_is_encoded_as_a_row_by_row_tokenizer_would(monkeypatch):
    """All rows' text is tokenized in one pass (in blocks); the ids equal a regular expression's pass per row,
    with newlines and missing values in cells, two text columns, accents, unknown words and rows longer than the
    limit."""
    import numpy as np

    from engine import portable

    monkeypatch.setattr(portable, "TEXT_CHARS", 20)  # several blocks, the last one short
    monkeypatch.setattr(portable, "TEXT_ROWS", 4)
    frame = pd.DataFrame(
        {
            "title": ["Café au lait", None, "Ünïcode\nline two", "a b c d e f g", "x", "it's"],
            "body": ["great\n\nfood", "so-so", None, "h i j", "", "Don't GO"],
        }
    )
    vocab = [
        "<pad>",
        "<unk>",
        "café",
        "au",
        "great",
        "food",
        "so",
        "a",
        "b",
        "c",
        "h",
        "it's",
        "don't",
        "go",
        "ünïcode",
    ]
    state = {
        "columns": [],
        "text": {"columns": ["title", "body"], "vocab": vocab, "max_length": 5, "lowercase": True},
    }
    got = portable.encode_rows(frame, state)
    index = {w: i for i, w in enumerate(vocab)}
    for r, (title, body) in enumerate(zip(frame["title"], frame["body"], strict=True)):
        text = " ".join("" if pd.isna(v) else v for v in (title, body))
        want = [index.get(w.lower(), 1) for w in portable.TOKEN.findall(text)][:5]
        assert got[r].tolist() == want + [0] * (5 - len(want)), (r, got[r], want)
    assert np.count_nonzero(got[3]) == 5  # cut at max_length


@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("chars", [1 << 23, 7, 50])
@pytest.mark.parametrize("storage", ["pyarrow", "python"])
def test_the_tokenizer_finds_the_words_a_regular_expression_finds(
    monkeypatch, lowercase, chars, storage
):
    """Random text over ASCII, accents, letters that lowercase to two characters, ligatures, CJK, emoji, digits
    of other scripts, combining marks, punctuation beyond ASCII, NUL (and a lone surrogate, which pyarrow cannot
    hold), in two columns with missing values, held by pyarrow or as Python strings: every row's words, in blocks
    of any size, are `TOKEN.findall` of its text, each lowercased when asked."""
    import random

    import numpy as np

    from engine import portable

    monkeypatch.setattr(portable, "TEXT_CHARS", chars)
    monkeypatch.setattr(portable, "TEXT_ROWS", 3)
    rng = random.Random(chars)
    alphabet = list("abcXYZ019_' \n\t.,!-") + list("éÜßİǅﬁ中😀٣\u0301—’Σς\u00a0\x00Ⅻ²")
    alphabet += ["\ud800"] if storage == "python" else []
    text = lambda: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))  # noqa: E731
    columns = {c: [text() if rng.random() > 0.1 else None for _ in range(1500)] for c in "ab"}
    kind = pd.StringDtype("pyarrow") if storage == "pyarrow" else object
    frame = pd.DataFrame(  # pyarrow's in two chunks, as a concatenation leaves them
        {
            c: pd.concat([pd.Series(v[:700], dtype=kind), pd.Series(v[700:], dtype=kind)])
            for c, v in columns.items()
        }
    ).reset_index(drop=True)
    assert (portable._arrow_text(frame) is not None) == (storage == "pyarrow")
    tokens = portable.tokenize(frame, lowercase)
    vocab = ["<pad>", "<unk>"] + tokens.words[::2]
    got = np.zeros((len(frame), 6), np.float32)
    portable.token_ids(tokens, vocab, got)
    index = {w: i for i, w in enumerate(vocab)}
    for r, (a, b) in enumerate(zip(columns["a"], columns["b"], strict=True)):
        row = f"{a or ''} {b or ''}"
        words = [w.lower() if lowercase else w for w in portable.TOKEN.findall(row)]
        assert len(words) == tokens.counts[r]
        want = [index.get(w, 1) for w in words][:6]
        assert got[r].tolist() == want + [0] * (6 - len(want)), (r, row)
    order = np.random.default_rng(0).permutation(len(frame))[:900]  # some rows, in another order
    picked = np.zeros((len(order), 6), np.float32)
    portable.token_ids(tokens, vocab, picked, order)
    assert (picked == got[order]).all()


def test_every_word_character_is_one():
    """Each of the 1,114,112 code points (but surrogates) is a word character exactly when `[\\w']` says so."""
    from engine import portable

    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    for frame in (
        pd.DataFrame({"t": [every]}),
        pd.DataFrame({"t": pd.Series([every], dtype=object)}),
    ):
        tokens = portable.tokenize(frame, False)
        assert [tokens.words[w] for w in tokens.word] == portable.TOKEN.findall(every)


def test_a_refused_table_leaves_no_copy_of_the_upload_behind(tmp_path):
    """The upload is written aside while it is prepared; a table that cannot be prepared leaves nothing."""
    from engine.data.prepare import prepare_file
    from engine.errors import DataError

    with pytest.raises(DataError, match="no column 'nope'"):
        prepare_file(b"a,b\n1,2\n3,4\n", "t.csv", "nope", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_a_message_and_leaves_nothing_behind(tmp_path, monkeypatch):
    """The dataset's file is reserved on disk before rows are encoded into it (memory-mapped): a disk without
    room says so, names what to do, and leaves no half-written folder or copy of the upload."""
    import errno
    import os

    from engine.data import store
    from engine.data.prepare import prepare_file
    from engine.errors import DataError

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store.os, "posix_fallocate", full)
    rows = "a,b,label\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(50))
    with pytest.raises(DataError, match="not enough disk space .*Free some space"):
        prepare_file(rows.encode(), "t.csv", "label", root=tmp_path)
    assert list(tmp_path.iterdir()) == []
