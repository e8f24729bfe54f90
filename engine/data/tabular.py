"""Tables -> tensors: read a CSV, detect the task, split, and preprocess.

Preprocessing is fitted on the training split alone with scikit-learn's transformers, saved as
plain JSON, and applied from that JSON (`apply_preprocessing`) for training and prediction alike.
"""

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from engine.errors import DataError

MAX_CLASSES = 1000


def read_csv_bytes(data: bytes, name: str = "the file") -> pd.DataFrame:
    """Parse CSV bytes, turning every way it can fail into a message that says what to do."""
    if not data or not data.strip():
        raise DataError(f"'{name}' is empty. Choose a CSV file with a header row and at least one data row.")
    head = data[:65536]
    if b"\x00" in head or sum(b < 9 or 13 < b < 32 for b in head) > len(head) * 0.05:
        raise DataError(f"'{name}' does not look like a CSV text file (it holds binary data). "
                        "Export your table as CSV (comma-separated text) and upload that.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    try:
        df = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError, ValueError) as e:
        raise DataError(f"'{name}' could not be read as CSV ({str(e).splitlines()[0]}). "
                        "Check that every row has the same number of comma-separated fields.") from None
    if df.shape[1] == 0:
        raise DataError(f"'{name}' has no columns. Choose a CSV file with a header row.")
    if len(df) == 0:
        raise DataError(f"'{name}' has a header ({', '.join(map(str, df.columns[:5]))}) but no data rows. "
                        "Add rows below the header.")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def detect_task(y: pd.Series) -> str:
    """Text, booleans and integer columns with few distinct values are classes; other numbers are regression."""
    y = y.dropna()
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    values = y.to_numpy(dtype=float)
    if np.all(np.mod(values, 1) == 0) and y.nunique() <= 20:
        return "classification"
    return "regression"


@dataclass
class TableInfo:
    """What preparing a table produced: arrays per split and everything needed to explain and replay it."""
    task: str
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    feature_names: list[str]
    classes: list[str] | None
    preprocessing: dict
    notices: list[str] = field(default_factory=list)


def _split(n: int, y, stratify: bool, val_fraction: float, test_fraction: float, seed: int):
    idx = np.arange(n)
    strat = y if stratify else None
    try:
        rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=strat)
        rel = val_fraction / (1 - test_fraction)
        train, val = train_test_split(rest, test_size=rel, random_state=seed,
                                      stratify=None if strat is None else y[rest])
    except ValueError:  # a class too small to stratify: fall back to a plain shuffle split
        rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed)
        train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def fit_preprocessing(frame: pd.DataFrame) -> dict:
    """Fit imputers, scaler and one-hot encoder on the training rows; return their state as JSON."""
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    categorical = [c for c in frame.columns if c not in numeric]
    state = {"numeric": [], "categorical": []}
    if numeric:
        values = frame[numeric].to_numpy(dtype=float)
        imputer = SimpleImputer(strategy="median", keep_empty_features=True).fit(values)
        scaler = StandardScaler().fit(imputer.transform(values))
        for i, col in enumerate(numeric):
            state["numeric"].append({"name": col, "median": float(imputer.statistics_[i]),
                                     "mean": float(scaler.mean_[i]), "scale": float(scaler.scale_[i])})
    if categorical:
        values = frame[categorical].astype("string").astype(object).where(frame[categorical].notna(), None)
        imputer = SimpleImputer(strategy="most_frequent", missing_values=None, keep_empty_features=True).fit(values)
        filled = imputer.transform(values)
        encoder = OneHotEncoder(handle_unknown="ignore").fit(filled)
        for i, col in enumerate(categorical):
            state["categorical"].append({"name": col, "most_frequent": str(imputer.statistics_[i]),
                                         "categories": [str(c) for c in encoder.categories_[i]]})
    return state


def preprocessing_feature_names(state: dict) -> list[str]:
    return [c["name"] for c in state["numeric"]] + [
        f"{c['name']}={cat}" for c in state["categorical"] for cat in c["categories"]]


def apply_preprocessing(frame: pd.DataFrame, state: dict) -> np.ndarray:
    """Turn raw rows into model inputs exactly as training did (missing columns are an error)."""
    needed = [c["name"] for c in state["numeric"] + state["categorical"]]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"the data lacks the column(s) {', '.join(missing)} the model was trained on. "
                        "Add them (same names as in training).")
    parts = []
    for c in state["numeric"]:
        col = pd.to_numeric(frame[c["name"]], errors="coerce").to_numpy(dtype=float)
        col = np.where(np.isnan(col), c["median"], col)
        parts.append(((col - c["mean"]) / c["scale"])[:, None])
    for c in state["categorical"]:
        col = frame[c["name"]].astype("string").fillna(c["most_frequent"]).to_numpy(dtype=object)
        cats = np.asarray(c["categories"], dtype=object)
        parts.append((col[:, None] == cats[None, :]).astype(np.float64))
    return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(frame), 0), np.float32)


def prepare_table(df: pd.DataFrame, target: str, task: str | None = None, *, val_fraction: float = 0.15,
                  test_fraction: float = 0.15, seed: int = 0, name: str = "the table") -> TableInfo:
    """Split the table, fit preprocessing on the training split, and return arrays for every split."""
    if target not in df.columns:
        raise DataError(f"'{name}' has no column '{target}'. Columns: {', '.join(map(str, df.columns[:20]))}.")
    if df.shape[1] < 2:
        raise DataError(f"'{name}' has only the target column '{target}': a model needs at least one feature column.")
    notices = []
    missing_target = int(df[target].isna().sum())
    if missing_target:
        notices.append(f"Dropped {missing_target} row(s) with no value in the target '{target}'.")
        df = df[df[target].notna()]
    detected = detect_task(df[target])
    task = task or detected
    y_raw = df[target]
    if task == "regression":
        y_num = pd.to_numeric(y_raw, errors="coerce")
        if y_num.isna().any() or pd.api.types.is_bool_dtype(y_raw):
            example = y_raw[y_num.isna()].iloc[0] if y_num.isna().any() else y_raw.iloc[0]
            raise DataError(f"regression needs a numeric target, but '{target}' holds values such as {example!r}. "
                            "Choose classification, or a numeric target column.")
        y_all = y_num.to_numpy(dtype=np.float64)
        classes = None
    elif task == "classification":
        labels = y_raw.astype(str) if not pd.api.types.is_numeric_dtype(y_raw) else y_raw
        classes_raw = sorted(labels.unique(), key=lambda v: (str(type(v)), v))
        if len(classes_raw) < 2:
            raise DataError(f"the target '{target}' has only one class ({classes_raw[0]!r}): a classifier needs at "
                            "least two. Choose another target column, or add rows of other classes.")
        if len(classes_raw) > MAX_CLASSES:
            raise DataError(f"the target '{target}' has {len(classes_raw)} distinct values, too many classes "
                            f"(at most {MAX_CLASSES}). If it is a number to predict, choose regression.")
        lookup = {v: i for i, v in enumerate(classes_raw)}
        y_all = labels.map(lookup).to_numpy(dtype=np.int64)
        classes = [str(int(c)) if isinstance(c, float) and c.is_integer() else str(c) for c in classes_raw]
    else:
        raise DataError(f"unknown task {task!r}: choose classification or regression.")
    if len(df) < 10:
        raise DataError(f"'{name}' has only {len(df)} usable rows; LayerLab needs at least 10 to split into "
                        "train, validation and test sets. Add rows.")
    features = df.drop(columns=[target])
    splits = _split(len(df), y_all, task == "classification", val_fraction, test_fraction, seed)
    train_frame = features.iloc[splits["train"]]
    for col in features.columns:
        n_missing = int(features[col].isna().sum())
        if n_missing:
            how = ("the median" if pd.api.types.is_numeric_dtype(features[col]) and
                   not pd.api.types.is_bool_dtype(features[col]) else "the most frequent value")
            notices.append(f"Column '{col}': {n_missing} missing value(s) filled with {how} of the training split.")
    state = fit_preprocessing(train_frame)
    if task == "regression":
        mean, std = float(y_all[splits["train"]].mean()), float(y_all[splits["train"]].std() or 1.0)
        state["target"] = {"name": target, "task": task, "mean": mean, "scale": std}
        y_all = ((y_all - mean) / std).astype(np.float32)
    else:
        state["target"] = {"name": target, "task": task, "classes": classes}
    x = {k: apply_preprocessing(features.iloc[v], state) for k, v in splits.items()}
    y = {k: y_all[v] for k, v in splits.items()}
    return TableInfo(task, x, y, preprocessing_feature_names(state), classes, state, notices)
