import numpy as np
import pandas as pd
import pytest

from engine.data.builtin import BUILTINS
from engine.data.prepare import prepare_builtin, prepare_file
from engine.data.readers import read_table
from engine.data.store import list_datasets, load_dataset
from engine.data.tabular import apply_preprocessing, detect_task
from engine.errors import DataError


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_prepares(name):
    ds = prepare_builtin(name, n_samples=300, noise=0.1)
    assert sum(ds.meta["sizes"].values()) > 0
    tasks = {"diabetes": "regression", "traffic": "forecast", "tales": "language_model"}
    assert ds.meta["task"] == tasks.get(name, "classification")
    assert ds.tensors["x_train"].shape[1:] == ds.input_shape
    if name == "digits":
        assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    if name == "shapes":
        assert ds.input_shape == (3, 32, 32) and ds.meta["classes"] == [
            "circle",
            "square",
            "triangle",
        ]
        assert 0 <= float(ds.tensors["x_train"].min()) and float(ds.tensors["x_train"].max()) <= 1
    elif name == "reviews":
        assert ds.input_shape == (24,) and ds.meta["vocab_size"] == len(ds.meta["vocab"]) == 40
        assert int(ds.tensors["x_train"].max()) < 40
    elif (
        name == "orders"
    ):  # two inputs: the other columns (2 numbers, 5 cuisines), then the review's tokens
        assert ds.meta["inputs"] == {
            "features": {"shape": [7], "tokens": False},
            "review": {"shape": [64], "tokens": True},
        }
        assert (
            ds.input_shape == (71,)
            and int(ds.tensors["x_train"][:, 7:].max()) < ds.meta["vocab_size"]
        )
    elif (
        name == "tales"
    ):  # 64 characters a window, the same window one character later as its targets
        assert ds.input_shape == (64,) and ds.meta["vocab"][0] == "<unk>"
    elif (
        name == "traffic"
    ):  # windows of 48 hours (vehicles, temperature), the next 12 hours to forecast
        assert ds.input_shape == (48, 2) and ds.tensors["y_train"].shape[1:] == (12,)
    elif BUILTINS[name].generated:
        assert ds.input_shape == (2,)


def test_generated_sets_take_size_noise_and_seed():
    a = prepare_builtin("spiral", n_samples=600, noise=0.0, seed=1)
    b = prepare_builtin("spiral", n_samples=600, noise=0.3, seed=1)
    assert sum(a.meta["sizes"].values()) == 600
    assert a.id != b.id


def _csv(rows: int = 60) -> bytes:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "age": rng.normal(40, 10, rows).round(1),
            "city": rng.choice(["paris", "oslo", "rome"], rows),
            "score": rng.normal(0, 1, rows),
            "label": rng.choice(["yes", "no"], rows),
        }
    )
    df.loc[[1, 5, 9], "age"] = np.nan
    df.loc[[2, 3], "city"] = np.nan
    return df.to_csv(index=False).encode()


def test_csv_preprocessing_fitted_on_training_split_only():
    ds = prepare_file(_csv(), "people.csv", "label")
    pre = ds.meta["preprocessing"]
    assert ds.task == "classification" and ds.meta["classes"] == ["no", "yes"]
    assert ds.meta["feature_names"] == ["age", "city=oslo", "city=paris", "city=rome", "score"]
    notices = " ".join(ds.meta["notices"])
    assert "'age': 3 missing value(s) filled with the median" in notices
    assert "'city': 2 missing value(s) filled with the most frequent value" in notices
    # Standardization statistics come from the training rows: the train split has mean 0, std 1.
    x = ds.tensors["x_train"].numpy()
    assert abs(x[:, 4].mean()) < 1e-5 and abs(x[:, 4].std() - 1) < 1e-3
    assert abs(ds.tensors["x_val"].numpy()[:, 4].mean()) > 1e-4  # other splits are not refitted
    # The saved JSON replays exactly on raw rows.
    raw = pd.read_csv(ds.path / "preview.csv")
    again = apply_preprocessing(raw.drop(columns=["label"]), pre)
    assert again.shape[1] == 5
    assert list(list_datasets())[0]["id"] == ds.id
    assert load_dataset(ds.id).meta == ds.meta


def test_task_detection_and_override():
    assert detect_task(pd.Series(["a", "b"])) == "classification"
    assert detect_task(pd.Series([0, 1, 2, 1])) == "classification"
    assert detect_task(pd.Series(np.linspace(0, 1, 50))) == "regression"
    df = pd.DataFrame({"x": range(40), "y": [i % 3 for i in range(40)]})
    ds = prepare_file(df.to_csv(index=False).encode(), "t.csv", "y", task="regression")
    assert ds.task == "regression" and ds.meta["preprocessing"]["target"]["scale"] > 0


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "is empty"),
        (b"   \n", "is empty"),
        (b"a,b,label\n", "no data rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "holds binary data"),
        (b"a,label\n" + b"1,same\n" * 20, "only one class"),
    ],
)
def test_bad_csv_inputs_say_what_to_do(data, words):
    with pytest.raises(DataError, match=words):
        prepare_file(data, "bad.csv", "label")


def test_non_numeric_target_for_regression():
    data = b"a,label\n" + b"".join(f"{i},v{i}\n".encode() for i in range(30))
    with pytest.raises(DataError, match="regression needs a numeric target"):
        prepare_file(data, "t.csv", "label", task="regression")


def test_missing_target_column_and_too_few_rows():
    with pytest.raises(DataError, match="no column 'nope'"):
        prepare_file(b"a,b\n1,2\n3,4\n", "t.csv", "nope")
    with pytest.raises(DataError, match="at least 10"):
        prepare_file(b"a,b\n1,0\n2,1\n3,0\n", "t.csv", "b")


def test_latin1_csv_is_read():
    df = read_table("name,v\ncafé,1\nnaïve,2\n".encode("latin-1"), "l.csv").frame
    assert list(df["name"]) == ["café", "naïve"]


def test_preparing_reports_progress_in_order_with_what_it_does(tmp_path):
    """The Data page draws these as a bar with an ETA; each step says what it is doing."""
    from engine.data.prepare import prepare_file, prepare_images
    from tests.test_images import shapes_zip

    seen = []
    rows = "a,b,note,label\n" + "\n".join(
        f"{i},{i % 7},word{i % 5} and more words here,{i % 2}" for i in range(300)
    )
    prepare_file(
        rows.encode(), "t.csv", "label", progress=lambda done, what: seen.append((done, what))
    )
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[0] < 0.35 and done[-1] >= 0.9
    words = " ".join(w for _, w in seen)
    assert "Reading t.csv" in words and "Encoding 300 rows" in words and "saving" in words
    seen.clear()
    prepare_images(
        shapes_zip(60), "shapes.zip", size=16, progress=lambda done, what: seen.append((done, what))
    )
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and any(
        "Decoding images" in w for _, w in seen
    )
