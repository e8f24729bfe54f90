"""Tables -> tensors: column plan, task detection, split, preprocessing.

Each feature column has a plan (role, type, missing-value strategy, scaling, encoding), suggested from the
data and editable on the Data page. Preprocessing is fitted on the training split alone (numbers with
scikit-learn's imputers and scalers; categories with pandas' hashing, which is far faster than comparing
strings), saved as plain JSON, and applied from that JSON (`apply_preprocessing`) for training and
prediction alike. A table with a text column becomes token ids (a word-level vocabulary
fitted on the training split).
"""

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from engine.errors import DataError

MAX_CLASSES = 1000
TOKEN = re.compile(r"[\w']+", re.UNICODE)


class ColumnPlan(BaseModel):
    """How one feature column is prepared."""
    model_config = ConfigDict(extra="forbid")
    name: str
    role: Literal["feature", "ignore"] = "feature"
    kind: Literal["numeric", "categorical", "boolean", "text"] = "numeric"
    missing: Literal["drop", "mean", "median", "most_frequent", "constant"] = "median"
    fill_value: str = ""
    scaling: Literal["standard", "minmax", "none"] = "standard"
    encoding: Literal["onehot", "index"] = "onehot"
    note: str = ""


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vocab_size: int = 10000
    max_length: int = 64
    lowercase: bool = True


def _is_bool(s: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(s):
        return True
    uniques = s.dropna().unique()
    if not 0 < len(uniques) <= 2 or pd.api.types.is_numeric_dtype(s):
        return False
    return {str(v).strip().lower() for v in uniques} <= {"true", "false", "yes", "no", "y", "n", "t", "f"}


def suggest_columns(df: pd.DataFrame, target: str) -> list[ColumnPlan]:
    """A plan per feature column: its type, sensible defaults, and ID-like or constant columns set to ignore."""
    plans = []
    n = len(df)
    sample = df.sample(min(n, 20_000), random_state=0) if n > 20_000 else df  # types from a sample: fast on 1M rows
    for col in df.columns:
        if col == target:
            continue
        s = sample[col]
        unique = s.nunique(dropna=True)
        if _is_bool(s):
            kind = "boolean"
        elif pd.api.types.is_numeric_dtype(s):
            kind = "numeric"
        else:
            words = s.dropna().astype(str).head(500).map(lambda t: len(TOKEN.findall(t)))
            kind = "text" if len(words) and words.mean() >= 4 and unique > 0.5 * s.notna().sum() else "categorical"
        plan = ColumnPlan(name=col, kind=kind, missing="median" if kind == "numeric" else
                          "constant" if kind == "text" else "most_frequent",
                          scaling="standard" if kind == "numeric" else "none")
        name_says_id = bool(re.search(r"(^|_|\b)(id|uuid|key|index)$|^unnamed", col.lower()))
        if unique <= 1 and df[col].nunique(dropna=True) <= 1:  # kept (positions can matter, e.g. pixels), flagged
            plan.note = "constant: carries no information; ignore it unless column positions matter"
        elif n > 10 and unique == s.notna().sum() == len(s) and kind in ("numeric", "categorical") and (
                name_says_id if kind == "numeric" else True) and df[col].is_unique:
            plan.role, plan.note = "ignore", "looks like an ID: a different value in every row"
        elif s.isna().mean() > 0.5:
            plan.note = f"{s.isna().mean():.0%} missing"
        plans.append(plan)
    return plans


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
    frame: pd.DataFrame | None = None  # the rows used, in their original form


def split_indices(n: int, y, stratify: bool, val_fraction: float, test_fraction: float, seed: int):
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


def _tokens(text: str, lowercase: bool) -> list[str]:
    return TOKEN.findall(text.lower() if lowercase else text)


def fit_preprocessing(frame: pd.DataFrame, plans: list[ColumnPlan], text: TextOptions) -> dict:
    """Fit each column's imputer, scaler and encoder on the training rows; return their state as JSON."""
    state: dict = {"columns": [], "text": None}
    text_cols = [p for p in plans if p.role == "feature" and p.kind == "text"]
    if text_cols:
        counts = Counter()
        for row in frame[[p.name for p in text_cols]].fillna("").astype(str).agg(" ".join, axis=1):
            counts.update(_tokens(row, text.lowercase))
        vocab = ["<pad>", "<unk>"] + [w for w, _ in counts.most_common(max(text.vocab_size - 2, 1))]
        state["text"] = {"columns": [p.name for p in text_cols], "vocab": vocab, "max_length": text.max_length,
                         "lowercase": text.lowercase}
        return state
    for p in plans:
        if p.role != "feature":
            continue
        col = frame[p.name]
        entry = p.model_dump()
        if p.kind in ("numeric", "boolean"):
            values = _numeric(col, p.kind).reshape(-1, 1)
            strategy = "median" if p.missing == "drop" else p.missing
            fill = float(p.fill_value) if strategy == "constant" and p.fill_value.strip() else 0.0
            imputer = SimpleImputer(strategy=strategy, fill_value=fill, keep_empty_features=True).fit(values)
            filled = imputer.transform(values)
            entry["fill"] = float(imputer.statistics_[0])
            if p.kind == "numeric" and p.scaling == "standard":
                scaler = StandardScaler().fit(filled)
                entry["shift"], entry["scale"] = float(scaler.mean_[0]), float(scaler.scale_[0])
            elif p.kind == "numeric" and p.scaling == "minmax":
                scaler = MinMaxScaler().fit(filled)
                entry["shift"], entry["scale"] = float(scaler.data_min_[0]), float(scaler.data_range_[0] or 1.0)
            else:
                entry["shift"], entry["scale"] = 0.0, 1.0
        else:
            # Categories are hashed with pandas (factorize), not compared as Python strings: 1M rows in
            # tens of milliseconds. The fill value is the training split's most frequent category.
            values = _as_text(col)
            codes, uniques = pd.factorize(values, sort=True)
            if p.missing == "constant" or not len(uniques):
                entry["fill"] = p.fill_value or "missing"
            else:
                entry["fill"] = str(uniques[np.bincount(codes[codes >= 0]).argmax()])
            cats = set(map(str, uniques))
            cats.add(entry["fill"]) if values.isna().any() else None
            entry["categories"] = sorted(cats)
        state["columns"].append(entry)
    return state


def _as_text(col: pd.Series) -> pd.Series:
    """Category values as strings, missing kept as NaN (a column of strings is returned as it is)."""
    if pd.api.types.infer_dtype(col, skipna=True) == "string":
        return col
    return col.astype(object).where(col.isna(), col.astype(str))


def _numeric(col: pd.Series, kind: str) -> np.ndarray:
    if kind == "boolean" and not pd.api.types.is_numeric_dtype(col):
        lookup = {"true": 1.0, "yes": 1.0, "y": 1.0, "t": 1.0, "false": 0.0, "no": 0.0, "n": 0.0, "f": 0.0}
        return col.map(lambda v: lookup.get(str(v).strip().lower(), np.nan) if pd.notna(v) else np.nan).to_numpy(float)
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)


def feature_names(state: dict) -> list[str]:
    if state.get("text"):
        return [f"token{i}" for i in range(state["text"]["max_length"])]
    names = []
    for c in state["columns"]:
        if c["kind"] == "categorical" and c["encoding"] == "onehot":
            names += [f"{c['name']}={cat}" for cat in c["categories"]]
        else:
            names.append(c["name"])
    return names


def apply_preprocessing(frame: pd.DataFrame, state: dict) -> np.ndarray:
    """Turn raw rows into model inputs exactly as training did (missing columns are an error)."""
    needed = state["text"]["columns"] if state.get("text") else [c["name"] for c in state["columns"]]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"the data lacks the column(s) {', '.join(missing)} the model was trained on. "
                        "Add them (same names as in training).")
    if state.get("text"):
        t = state["text"]
        index = {w: i for i, w in enumerate(t["vocab"])}
        out = np.zeros((len(frame), t["max_length"]), np.float32)
        rows = frame[t["columns"]].fillna("").astype(str).agg(" ".join, axis=1)
        for r, row in enumerate(rows):
            ids = [index.get(w, 1) for w in _tokens(row, t["lowercase"])][: t["max_length"]]
            out[r, :len(ids)] = ids
        return out
    width = sum(len(c["categories"]) if c["kind"] == "categorical" and c["encoding"] == "onehot" else 1
                for c in state["columns"])
    out = np.zeros((len(frame), width), np.float32)
    j = 0
    for c in state["columns"]:
        col = frame[c["name"]]
        if c["kind"] in ("numeric", "boolean"):
            values = _numeric(col, c["kind"])
            if c["missing"] == "drop" and np.isnan(values).any():
                raise DataError(f"column '{c['name']}' has missing values, and its rows were dropped in training: "
                                "fill them in, or choose another missing-value strategy for it.")
            values = np.where(np.isnan(values), c["fill"], values)
            out[:, j] = (values - c["shift"]) / c["scale"]
            j += 1
            continue
        codes = pd.Categorical(_as_text(col).fillna(c["fill"]), categories=c["categories"]).codes  # -1: unseen
        if c["encoding"] == "onehot":
            rows = np.flatnonzero(codes >= 0)
            out[rows, j + codes[rows]] = 1.0
            j += len(c["categories"])
        else:  # 0 = unseen, 1.. = the categories: an index for an embedding
            out[:, j] = codes + 1
            j += 1
    return out


def prepare_table(df: pd.DataFrame, target: str, task: str | None = None, *, plans: list[ColumnPlan] | None = None,
                  text: TextOptions | None = None, val_fraction: float = 0.15, test_fraction: float = 0.15,
                  seed: int = 0, name: str = "the table") -> TableInfo:
    """Split the table, fit preprocessing on the training split, and return arrays for every split."""
    if target not in df.columns:
        raise DataError(f"'{name}' has no column '{target}'. Columns: {', '.join(map(str, df.columns[:20]))}.")
    plans = plans if plans is not None else suggest_columns(df, target)
    text = text or TextOptions()
    features = [p for p in plans if p.role == "feature"]
    notices = [f"Ignoring '{p.name}': {p.note}." for p in plans if p.role == "ignore" and p.note]
    if any(p.kind == "text" for p in features) and any(p.kind != "text" for p in features):
        others = [p.name for p in features if p.kind != "text"]
        notices.append(f"Text columns become the model's token input; the other features ({', '.join(others)}) "
                       "are not used. Set them to ignore, or the text columns to categorical.")
    missing_target = int(df[target].isna().sum())
    if missing_target:
        notices.append(f"Dropped {missing_target} row(s) with no value in the target '{target}'.")
        df = df[df[target].notna()]
    for p in features:
        if p.missing == "drop" and p.kind != "text" and df[p.name].isna().any():
            notices.append(f"Dropped {int(df[p.name].isna().sum())} row(s) with no value in '{p.name}'.")
            df = df[df[p.name].notna()]
    task = task or detect_task(df[target])
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
    if not features:
        raise DataError(f"'{name}' has no feature columns left (all are ignored or only the target exists): set at "
                        "least one column's role to feature.")
    if len(df) < 10:
        raise DataError(f"'{name}' has only {len(df)} usable rows; LayerLab needs at least 10 to split into "
                        "train, validation and test sets. Add rows.")
    df = df.reset_index(drop=True)
    splits = split_indices(len(df), y_all, task == "classification", val_fraction, test_fraction, seed)
    for p in features:
        n_missing = int(df[p.name].isna().sum())
        if n_missing and p.missing != "drop" and p.kind != "text":
            how = {"median": "the median", "mean": "the mean", "most_frequent": "the most frequent value",
                   "constant": f"the constant {p.fill_value or ('0' if p.kind == 'numeric' else 'missing')!r}"}[p.missing]
            notices.append(f"Column '{p.name}': {n_missing} missing value(s) filled with {how}"
                           f"{'' if p.missing == 'constant' else ' of the training split'}.")
    state = fit_preprocessing(df.iloc[splits["train"]], features, text)
    if task == "regression":
        mean, std = float(y_all[splits["train"]].mean()), float(y_all[splits["train"]].std() or 1.0)
        state["target"] = {"name": target, "task": task, "mean": mean, "scale": std}
        y_all = ((y_all - mean) / std).astype(np.float32)
    else:
        state["target"] = {"name": target, "task": task, "classes": classes}
    x_all = apply_preprocessing(df, state)  # encode once, then split
    x = {k: x_all[v] for k, v in splits.items()}
    del x_all
    y = {k: y_all[v] for k, v in splits.items()}
    return TableInfo(task, x, y, feature_names(state), classes, state, notices, df)
