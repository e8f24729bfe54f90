"""Tables -> tensors: column plan, task detection, split, preprocessing.

Each feature column has a plan (role, type, missing-value strategy, scaling, encoding), suggested from the
data and editable on the Data page. Preprocessing is fitted on the training split alone (numbers with
scikit-learn's scalers and imputers, medians with NumPy; categories by their codes, hashed once by pandas or
dictionary-encoded by the CSV reader), saved as plain JSON, and applied from that JSON (`apply_preprocessing`)
for training and prediction alike. A table with a text column becomes token ids (a word-level vocabulary
fitted on the training split).
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from engine.data.store import SPLITS
from engine.errors import DataError
from engine.limits import DATA_BYTES, ONEHOT
from engine.portable import (
    TOKEN,
    InputError,
    Tokens,
    category_codes,
    encode_rows,
    numeric,
    threaded,
    tokenize,
)
from engine.progress import Progress, quiet
from engine.spec import FIRST_INPUT

MAX_CLASSES = 1000
FLOAT32_REACH = (
    1e30  # an encoded value must stay well inside float32 (about 3.4e38), squares and sums included
)


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


class Split(BaseModel):
    """How the rows are shared out: the validation and test fractions (the rest trains). Stored with the dataset."""

    model_config = ConfigDict(extra="forbid")
    val: float = Field(0.15, ge=0.05, le=0.5, title="Validation share")
    test: float = Field(0.15, ge=0.05, le=0.5, title="Test share")

    @model_validator(mode="after")
    def _leaves_training_rows(self):
        if self.val + self.test > 0.6:
            raise ValueError(
                f"validation {self.val:.0%} and test {self.test:.0%} leave only "
                f"{1 - self.val - self.test:.0%} of the rows to train on; keep them to 60% or less together"
            )
        return self


def _is_bool(s: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(s):
        return True
    uniques = s.dropna().unique()
    if not 0 < len(uniques) <= 2 or pd.api.types.is_numeric_dtype(s):
        return False
    return {str(v).strip().lower() for v in uniques} <= {
        "true",
        "false",
        "yes",
        "no",
        "y",
        "n",
        "t",
        "f",
    }


def _mostly_numbers(s: pd.Series) -> bool:
    """Text cells that are numbers in at least 95% of the filled rows ('12', '3.5', and a stray 'abc' or 'n/a'):
    a numeric column with a few bad cells, read as numbers (those cells become missing), not as categories."""
    filled = s.dropna()
    if len(filled) < 20:
        return False
    parsed = numeric(filled, "numeric")
    return np.isfinite(parsed).mean() >= 0.95 and pd.Series(parsed).nunique() > 2


def not_numbers(col: pd.Series) -> tuple[int, list[int]]:
    """How many filled cells of a column are not numbers, and the first few of their rows (counted from 1)."""
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return 0, []
    bad = np.flatnonzero(np.isnan(numeric(col, "numeric")) & col.notna().to_numpy())
    return len(bad), (bad[:5] + 1).tolist()


def suggest_columns(df: pd.DataFrame, target: str) -> list[ColumnPlan]:
    """A plan per feature column: its type, sensible defaults, and ID-like or constant columns set to ignore."""
    plans = []
    n = len(df)
    sample = (
        df.sample(min(n, 20_000), random_state=0) if n > 20_000 else df
    )  # types from a sample: fast on 1M rows
    others = df.drop(columns=[target], errors="ignore")
    pixels = others.shape[1] >= PIXEL_COLUMNS and all(
        pd.api.types.is_numeric_dtype(t) for t in others.dtypes
    )
    for col in df.columns:
        if col == target:
            continue
        s = sample[col]
        unique = s.nunique(dropna=True)
        kind = (
            "boolean"
            if _is_bool(s)
            else "numeric"
            if pd.api.types.is_numeric_dtype(s)
            else "categorical"
        )
        filled = s.notna().sum()
        words = 0.0
        if kind == "categorical" and _mostly_numbers(s):
            kind = "numeric"
            unique = pd.Series(numeric(s, "numeric")).nunique()
        if kind not in ("boolean", "numeric"):
            counts = s.dropna().astype(str).head(500).map(lambda t: len(TOKEN.findall(t)))
            words = counts.mean() if len(counts) else 0.0
            kind = "text" if words >= 4 and unique > 0.5 * filled else "categorical"
        plan = ColumnPlan(
            name=col,
            kind=kind,
            missing="median"
            if kind == "numeric"
            else "constant"
            if kind == "text"
            else "most_frequent",
            scaling="standard" if kind == "numeric" else "none",
        )
        name_says_id = bool(
            re.search(r"(^|_|\b)(id|uuid|key|index|idx|row|row_?(no|num|number)|rownum|serial|s\.?no)$|^unnamed",
                      col.lower())
        )  # fmt: skip
        if unique <= 1 and df[col].nunique(dropna=True) <= 1:
            if pixels:  # a picture stored as a row: positions matter (a reshape to an image needs every pixel)
                plan.note = (
                    "constant: carries no information; kept, as this table looks like pixels"
                )
            else:
                plan.role, plan.note = (
                    "ignore",
                    "constant: the same value in every row carries no information",
                )
        elif (
            n > 10
            and unique == filled == len(s)
            and kind in ("numeric", "categorical")
            and (name_says_id if kind == "numeric" else True)
            and df[col].is_unique
        ):
            plan.role, plan.note = (
                "ignore",
                "looks like an ID or a row number: a different value in every row",
            )
        elif (
            kind == "categorical" and unique > 20 and unique > 0.5 * filled
        ):  # one-hot, rows would be memorised
            plan.role, plan.note = (
                "ignore",
                (
                    f"looks like an ID or a code: {unique:,} different values in {filled:,} "
                    "rows, too many to learn from"
                ),
            )
        elif (
            kind == "text" and words < 6 and unique > 0.9 * filled
        ):  # names, e-mails (short reviews run longer)
            plan.role, plan.note = (
                "ignore",
                (
                    "looks like names or codes: a few words, different in almost every row "
                    "(free text to learn from is longer)"
                ),
            )
        elif s.isna().mean() > 0.5 and kind == "text":  # it would become the model's whole input
            plan.role, plan.note = "ignore", f"mostly empty text ({s.isna().mean():.0%} missing)"
        elif s.isna().mean() > 0.5:
            plan.note = f"{s.isna().mean():.0%} missing"
        plans.append(plan)
    return plans


PIXEL_COLUMNS = (
    64  # a table with at least this many columns, all numeric, may be images stored as rows
)
TARGET_NAMES = re.compile(
    r"^(target|label|labels|class|y|outcome|species|survived|diagnosis|churn)$", re.IGNORECASE
)


def target_problem(y: pd.Series) -> str | None:
    """Why a column makes a poor target, in words, or None: mostly empty, free text, an ID, or one value."""
    n = len(y)
    filled = y.notna().sum()
    if n == 0 or filled == 0:
        return "it is empty"
    if filled < 0.5 * n:
        return f"it is {1 - filled / n:.0%} empty (those rows would be dropped)"
    values = y.dropna()
    if values.nunique() <= 1:
        return "it holds a single value"
    if not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        sample = values.astype(str).head(500)
        if sample.map(lambda t: len(TOKEN.findall(t))).mean() >= 4 and values.nunique() > 0.5 * len(
            values
        ):
            return "it looks like free text (a sentence in most rows), not a label"
        if values.nunique() == len(values) and len(values) > 20:
            return "every row has its own value, like an ID"
        if values.nunique() > MAX_CLASSES:
            return f"it has {values.nunique():,} distinct values, too many classes"
    return None


def suggest_target(df: pd.DataFrame) -> str:
    """The most likely target: a column named like one (label, target, class, y, …), else the last column that
    makes a sound target (not mostly empty, not free text, not an ID, not constant), else the last column."""
    columns = list(df.columns)
    sound = [c for c in columns if target_problem(df[c]) is None]
    named = [c for c in sound if TARGET_NAMES.match(str(c).strip())]
    return (named or sound or columns)[-1]


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
    columns: list[str] = field(default_factory=list)  # the feature columns used (before encoding)
    order: np.ndarray | None = (
        None  # rows of `frame` in split order (train, then validation, then test)
    )


def _apportion(counts: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """`total` spread over classes in proportion to `counts`: floors, then the largest remainders (ties broken
    at random), never more than a class holds. The same rounding scikit-learn's StratifiedShuffleSplit uses."""
    quota = counts * total / max(counts.sum(), 1)
    share = np.minimum(np.floor(quota).astype(np.int64), counts)
    left = total - int(share.sum())
    if left > 0:
        room = np.flatnonzero(share < counts)
        rank = np.lexsort((rng.random(len(room)), -(quota[room] - share[room])))
        share[room[rank[:left]]] += 1
    return share


def split_indices(
    n: int, y, stratify: bool, val_fraction: float, test_fraction: float, seed: int
) -> dict:
    """Seeded train / validation / test row indices, each in the table's order. Stratified: each class is split
    in the same proportions, so every split sees every class it can. Linear time (1M rows in tens of ms)."""
    rng = np.random.default_rng(seed)
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    which = np.zeros(n, np.int8)  # 0 train, 1 validation, 2 test
    if stratify:
        y = np.asarray(y)
        small = np.issubdtype(y.dtype, np.integer) and len(y) and 0 <= y.min() and y.max() < 65536
        inverse = y.astype(np.uint16) if small else np.unique(y, return_inverse=True)[1].ravel()
        counts = np.bincount(inverse)
        order = np.argsort(
            inverse, kind="stable"
        )  # rows grouped by class (a radix sort for uint16)
        test = _apportion(counts, n_test, rng)
        val = _apportion(counts - test, n_val, rng)
        start = 0
        for c, count in enumerate(counts.tolist()):
            rows = rng.permutation(order[start : start + count])
            which[rows[: test[c]]] = 2
            which[rows[test[c] : test[c] + val[c]]] = 1
            start += count
    else:
        rows = rng.permutation(n)
        which[rows[:n_test]] = 2
        which[rows[n_test : n_test + n_val]] = 1
    return {
        "train": np.flatnonzero(which == 0),
        "val": np.flatnonzero(which == 1),
        "test": np.flatnonzero(which == 2),
    }


def _impute_statistic(values: np.ndarray, strategy: str, fill_value: str) -> float:
    """The value that fills a numeric column's gaps, from its training rows."""
    if strategy == "constant":
        return float(fill_value) if fill_value.strip() else 0.0
    if np.isnan(values).all():
        return 0.0
    if (
        strategy == "median"
    ):  # the same value as SimpleImputer's, which sorts a masked copy: 4x slower here
        return float(np.nanmedian(values))
    return float(SimpleImputer(strategy=strategy).fit(values.reshape(-1, 1)).statistics_[0])


def fit_preprocessing(
    frame: pd.DataFrame,
    plans: list[ColumnPlan],
    text: TextOptions,
    rows: np.ndarray | None = None,
    tokens: Tokens | None = None,
) -> dict:
    """Fit each column's imputer, scaler and encoder on the training rows (`rows` of `frame`, or all of it);
    return their state as JSON. `tokens`: the frame's text already tokenized (`prepare_table` tokenizes once
    for the vocabulary and the encoding)."""
    state: dict = {"columns": [], "text": None}
    text_cols = [p.name for p in plans if p.role == "feature" and p.kind == "text"]
    if text_cols:
        if tokens is None:
            tokens = tokenize(frame[text_cols], text.lowercase)
        counts = np.bincount(tokens.of(rows), minlength=len(tokens.words))
        # the most frequent words; a tie in order of first appearance
        frequent = np.argsort(-counts, kind="stable")[: max(text.vocab_size - 2, 1)]
        vocab = ["<pad>", "<unk>"] + [tokens.words[i] for i in frequent if counts[i]]
        state["text"] = {
            "columns": text_cols,
            "vocab": vocab,
            "max_length": text.max_length,
            "lowercase": text.lowercase,
        }
    features = [p for p in plans if p.role == "feature" and p.kind != "text"]
    state["columns"] = threaded(lambda p: _fit_column(frame[p.name], p, rows), features)
    return state


def _fit_column(col: pd.Series, p: ColumnPlan, rows: np.ndarray | None) -> dict:
    with np.errstate(
        over="ignore", invalid="ignore"
    ):  # huge values are refused below, with the column named
        return _fit(col, p, rows)


def _fit(col: pd.Series, p: ColumnPlan, rows: np.ndarray | None) -> dict:
    entry = p.model_dump()
    if p.kind in ("numeric", "boolean"):
        values = numeric(col, p.kind)
        values = values if rows is None else values[rows]
        entry["fill"] = _impute_statistic(
            values, "median" if p.missing == "drop" else p.missing, p.fill_value
        )
        filled = np.where(np.isnan(values), entry["fill"], values).reshape(-1, 1)
        if p.kind == "numeric" and p.scaling == "standard" and len(filled):
            scaler = StandardScaler().fit(filled)
            entry["shift"], entry["scale"] = float(scaler.mean_[0]), float(scaler.scale_[0])
        elif p.kind == "numeric" and p.scaling == "minmax" and len(filled):
            scaler = MinMaxScaler().fit(filled)
            entry["shift"], entry["scale"] = (
                float(scaler.data_min_[0]),
                float(scaler.data_range_[0] or 1.0),
            )
        else:
            entry["shift"], entry["scale"] = 0.0, 1.0
        reach = (
            max(
                abs(float(np.max(filled, initial=0.0)) - entry["shift"]),
                abs(float(np.min(filled, initial=0.0)) - entry["shift"]),
            )
            / entry["scale"]
            if len(filled)
            else 0.0
        )
        if not (
            math.isfinite(entry["shift"])
            and math.isfinite(entry["scale"])
            and reach < FLOAT32_REACH
        ):
            raise DataError(
                f"column '{p.name}' holds values too large to compute with (such as "
                f"{float(values[np.nanargmax(np.abs(values))]):.3g}): scaled, they overflow 32-bit floats. "
                "Divide the column by a power of ten in the file, or set its role to ignore."
            )
        return entry
    codes, labels = category_codes(col)
    codes = codes if rows is None else codes[rows]
    counts = np.bincount(codes[codes >= 0], minlength=len(labels))
    seen = labels[counts > 0]
    if p.missing == "constant" or not len(seen):
        entry["fill"] = p.fill_value or "missing"
    else:  # the training split's most frequent category (the first in sorted order on a tie)
        entry["fill"] = str(min(labels[counts == counts.max()]))
    cats = set(seen)
    if (codes < 0).any():
        cats.add(entry["fill"])
    cap = ONEHOT.value
    if (
        p.encoding == "onehot" and len(cats) > cap
    ):  # the most frequent stay; the rest share the all-zero row
        frequent = labels[np.argsort(-counts, kind="stable")[:cap]]
        entry["other"] = len(cats) - cap
        cats = set(frequent)
    entry["categories"] = sorted(cats)
    return entry


def feature_names(state: dict) -> list[str]:
    """The encoded columns' names: the other columns' first, then the text's tokens."""
    return [name for name, _ in _features(state)]


def feature_sources(state: dict) -> list[str]:
    """The source column of each encoded column (a one-hot column's, a token's: the column it came from)."""
    return [source for _, source in _features(state)]


def _features(state: dict) -> list[tuple[str, str]]:
    features = []
    for c in state["columns"]:
        if c["kind"] == "categorical" and c["encoding"] == "onehot":
            features += [(f"{c['name']}={cat}", c["name"]) for cat in c["categories"]]
        else:
            features.append((c["name"], c["name"]))
    if state.get("text"):
        text = " + ".join(str(c) for c in state["text"]["columns"])
        features += [(f"token{i}", text) for i in range(state["text"]["max_length"])]
    return features


def model_inputs(state: dict) -> dict | None:
    """For a table with text and other columns, its two parts: {"features": the other columns, <the text's name>:
    the token ids}, as the compiler takes them (each row holds them side by side, in this order); else None."""
    if not (state.get("text") and state.get("columns")):
        return None
    columns = state["text"]["columns"]
    name = (
        re.sub(r"[^A-Za-z0-9]+", "_", str(columns[0])).strip("_").lower()[:40]
        if len(columns) == 1
        else "text"
    )
    if not re.match(r"^[a-z_]", name) or name == FIRST_INPUT:
        name = f"text_{name}".rstrip("_")
    width = len(feature_names(state)) - state["text"]["max_length"]
    return {
        FIRST_INPUT: {"shape": [width], "tokens": False},
        name: {"shape": [state["text"]["max_length"]], "tokens": True},
    }


Allocate = Callable[[dict, int, np.dtype], tuple[np.ndarray, np.ndarray]]


def in_memory(sizes: dict, width: int, y_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed arrays for every split's encoded rows (float32, `width` wide) and targets, in split order."""
    n = sum(sizes.values())
    return np.zeros((n, width), np.float32), np.zeros(n, y_dtype)


def apply_preprocessing(
    frame: pd.DataFrame,
    state: dict,
    rows: np.ndarray | None = None,
    tokens: Tokens | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Turn raw rows into model inputs exactly as training did (`engine.portable.encode_rows`, which a bundle's
    predict.py runs too); DataError when the rows cannot be prepared."""
    try:
        return encode_rows(frame, state, rows, tokens, out)
    except InputError as e:
        raise DataError(str(e)) from None


def prepare_table(
    df: pd.DataFrame,
    target: str,
    task: str | None = None,
    *,
    plans: list[ColumnPlan] | None = None,
    text: TextOptions | None = None,
    split: Split | None = None,
    seed: int = 0,
    name: str = "the table",
    drop_duplicates: bool = False,
    progress: Progress = quiet,
    allocate: Allocate | None = None,
) -> TableInfo:
    """Split the table, fit preprocessing on the training split, and return arrays for every split.
    `drop_duplicates`: keep one of each set of rows that agree on the used columns and the target. `allocate`:
    where the encoded rows go (`in_memory` by default; a dataset's file, memory-mapped, when saving)."""
    if target not in df.columns:
        raise DataError(
            f"'{name}' has no column '{target}'. Columns: {', '.join(map(str, df.columns[:20]))}."
        )
    plans = plans if plans is not None else suggest_columns(df, target)
    text = text or TextOptions()
    features = [p for p in plans if p.role == "feature"]
    notices = [f"Ignoring '{p.name}': {p.note}." for p in plans if p.role == "ignore" and p.note]
    if problem := target_problem(df[target]):
        notices.append(
            f"'{target}' is an unlikely target: {problem}. Check that it is the column to predict."
        )
    if df[target].notna().sum() == 0:
        raise DataError(
            f"the target '{target}' is empty in every row of '{name}'. Choose the column that holds what to "
            "predict."
        )
    if pd.api.types.is_numeric_dtype(df[target]) and not pd.api.types.is_bool_dtype(df[target]):
        infinite = np.isinf(df[target].to_numpy(dtype=float, na_value=np.nan))
        if infinite.any():
            notices.append(
                f"Dropped {int(infinite.sum()):,} row(s) whose target '{target}' is infinite (inf or -inf), "
                "as rows with no target are: fix those values in the file to keep them."
            )
            df = df[~infinite]
    missing_target = int(df[target].isna().sum())
    if missing_target:
        notices.append(f"Dropped {missing_target} row(s) with no value in the target '{target}'.")
        df = df[df[target].notna()]
    if not len(df):
        raise DataError(
            f"no row of '{name}' has a usable value in the target '{target}' (each is empty or "
            "infinite). Choose the column that holds what to predict, or fix its values."
        )
    if drop_duplicates:
        before = len(df)
        df = df.drop_duplicates(subset=[p.name for p in features] + [target])
        if before > len(df):
            notices.append(
                f"Dropped {before - len(df):,} duplicate row(s) (the same inputs and target)."
            )
    for p in features:
        if p.missing == "drop" and p.kind != "text" and df[p.name].isna().any():
            notices.append(
                f"Dropped {int(df[p.name].isna().sum())} row(s) with no value in '{p.name}'."
            )
            df = df[df[p.name].notna()]
    task = task or detect_task(df[target])
    y_raw = df[target]
    if task == "regression":
        y_num = pd.to_numeric(y_raw, errors="coerce")
        if y_num.isna().any() or pd.api.types.is_bool_dtype(y_raw):
            example = y_raw[y_num.isna()].iloc[0] if y_num.isna().any() else y_raw.iloc[0]
            raise DataError(
                f"regression needs a numeric target, but '{target}' holds values such as {example!r}. "
                "Choose classification, or a numeric target column."
            )
        y_all = y_num.to_numpy(dtype=np.float64)
        classes = None
    elif task == "classification":
        labels = y_raw.astype(str) if not pd.api.types.is_numeric_dtype(y_raw) else y_raw
        classes_raw = sorted(labels.unique(), key=lambda v: (str(type(v)), v))
        if len(classes_raw) < 2:
            raise DataError(
                f"the target '{target}' has only one class ('{classes_raw[0]}'): a classifier needs at "
                "least two. Choose another target column, or add rows of other classes."
            )
        if len(classes_raw) > MAX_CLASSES:
            raise DataError(
                f"the target '{target}' has {len(classes_raw)} distinct values, too many classes "
                f"(at most {MAX_CLASSES}). If it is a number to predict, choose regression."
            )
        y_all = pd.Index(classes_raw).get_indexer(labels).astype(np.int64)
        classes = [
            str(int(c)) if isinstance(c, float) and c.is_integer() else str(c) for c in classes_raw
        ]
    else:
        raise DataError(f"unknown task {task!r}: choose classification or regression.")
    if not features:
        raise DataError(
            f"'{name}' has no feature columns left (all are ignored or only the target exists): set at "
            "least one column's role to feature."
        )
    if len(df) < 10:
        raise DataError(
            f"'{name}' has only {len(df)} usable rows; LayerLab needs at least 10 to split into "
            "train, validation and test sets. Add rows."
        )
    file_rows = (
        df.index.to_numpy()
    )  # each row's place in the table as read, before rows were dropped
    df = df.reset_index(drop=True)
    split = split or Split()
    splits = split_indices(len(df), y_all, task == "classification", split.val, split.test, seed)
    for p in features:
        if p.kind == "numeric":
            count, rows = not_numbers(df[p.name])
            if count:
                notices.append(
                    f"Column '{p.name}': {count:,} value(s) that are not numbers (such as "
                    f"{str(df[p.name].iloc[rows[0] - 1])[:30]!r}, in data row(s) "
                    f"{', '.join(str(file_rows[r - 1] + 1) for r in rows)}{' …' if count > len(rows) else ''}"
                    ") treated as missing."
                )
            values = df[p.name]
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                infinite = int(np.isinf(values.to_numpy(dtype=float, na_value=np.nan)).sum())
                if infinite:
                    notices.append(
                        f"Column '{p.name}': {infinite:,} infinite value(s) (inf or -inf) treated as missing."
                    )
        n_missing = int(df[p.name].isna().sum())
        if n_missing and p.missing != "drop" and p.kind != "text":
            how = {
                "median": "the median",
                "mean": "the mean",
                "most_frequent": "the most frequent value",
                "constant": f"the constant {p.fill_value or ('0' if p.kind == 'numeric' else 'missing')!r}",
            }[p.missing]
            notices.append(
                f"Column '{p.name}': {n_missing} missing value(s) filled with {how}"
                f"{'' if p.missing == 'constant' else ' of the training split'}."
            )
    progress(0.2, "Fitting the columns on the training split")
    # Encoded in split order (train rows, then validation, then test): each split is a slice, not a copy.
    order = np.concatenate([splits[k] for k in SPLITS])
    text_cols = [p.name for p in features if p.kind == "text"]
    # the text tokenized once, for the vocabulary and the encoding
    tokens = tokenize(df[text_cols], text.lowercase) if text_cols else None
    state = fit_preprocessing(df, features, text, rows=splits["train"], tokens=tokens)
    for c in state["columns"]:
        if c.get("other"):
            notices.append(
                f"Column '{c['name']}': {c['other'] + len(c['categories']):,} categories; the "
                f"{len(c['categories'])} most frequent are one-hot encoded, the other {c['other']:,} share "
                f"one all-zero code (set {ONEHOT.name} for more, or ignore the column)."
            )
    need = len(df) * len(feature_names(state)) * 4
    if need > DATA_BYTES.value:
        raise DATA_BYTES.refuse(
            name,
            f"{len(df):,} rows × {len(feature_names(state)):,} encoded columns take "
            f"{DATA_BYTES.describe(need)}",
            "Ignore wide columns, or use fewer rows.",
        )
    progress(0.5, f"Encoding {len(df):,} rows")
    if task == "regression":
        with np.errstate(over="ignore", invalid="ignore"):
            mean, std = (
                float(y_all[splits["train"]].mean()),
                float(y_all[splits["train"]].std() or 1.0),
            )
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise DataError(
                f"the target '{target}' holds values too large to compute with (up to "
                f"{np.abs(y_all).max():.3g}). Divide it by a power of ten in the file."
            )
        state["target"] = {"name": target, "task": task, "mean": mean, "scale": std}
        y_all = ((y_all - mean) / std).astype(np.float32)
    else:
        state["target"] = {"name": target, "task": task, "classes": classes}
    sizes = {k: len(splits[k]) for k in SPLITS}
    x_all, y_out = (allocate or in_memory)(sizes, len(feature_names(state)), y_all.dtype)
    apply_preprocessing(df, state, rows=order, tokens=tokens, out=x_all)
    y_out[:] = y_all[order]
    bounds = np.cumsum([0] + [sizes[k] for k in SPLITS])
    x = {k: x_all[bounds[i] : bounds[i + 1]] for i, k in enumerate(SPLITS)}
    y = {k: y_out[bounds[i] : bounds[i + 1]] for i, k in enumerate(SPLITS)}
    return TableInfo(
        task,
        x,
        y,
        feature_names(state),
        classes,
        state,
        notices,
        df,
        [p.name for p in features],
        order,
    )
