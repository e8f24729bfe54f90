"""Preparing new data and turning a model's outputs into predictions, with only the standard library, NumPy,
pandas, Pillow and PyTorch.

This file ships verbatim inside every bundle's predict.py, so a bundle predicts where LayerLab is not
installed; LayerLab's own training, Predict page and CLI call the same functions, so both prepare data
exactly alike. It must not import from `engine` (a test runs the bundle's predict.py with `engine` blocked).
"""

import io
import itertools
import os
import re
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

ENCODE_BLOCK = 16384
TEXT_BLOCK = 65536  # rows tokenized at a time
TOKEN = re.compile(r"[\w']+", re.UNICODE)
TOKEN_OR_ROW_END = re.compile(r"[\w']+|\n", re.UNICODE)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
FORMATS = {"PNG", "JPEG", "BMP", "GIF", "WEBP", "MPO"}
MAX_PIXELS = 40_000_000  # per image, before resizing
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula
PREDICT_BATCH = 1024


class InputError(ValueError):
    """New data that cannot be prepared the way the training data was; the message says what to change."""


def threaded(fn: Callable, items: Iterable) -> list:
    """`[fn(item) for item in items]`, run on all cores; in order; the first exception propagates. (NumPy and
    pandas release the GIL on large arrays.)"""
    items = list(items)
    workers = min(len(items), os.cpu_count() or 1)
    if workers < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


# --- tables -------------------------------------------------------------------------------------------------

ROW_END = "\n"


def row_tokens(frame: pd.DataFrame, lowercase: bool) -> list[str]:
    """Every row's words (its text columns joined by spaces, missing values as empty text), each row's followed
    by ROW_END. One regex pass over all the text (a newline inside a cell separates words anyway): a pass per
    row took 9 µs a row."""
    joined = None
    for name in frame.columns:
        col = frame[name].astype(object).fillna("").astype(str)
        joined = col if joined is None else joined + " " + col
    if joined is None or not len(joined):
        return []
    corpus = ROW_END.join(joined.str.replace(ROW_END, " ", regex=False).tolist()) + ROW_END
    return TOKEN_OR_ROW_END.findall(corpus.lower() if lowercase else corpus)


def numeric(col: pd.Series, kind: str) -> np.ndarray:
    """A column as float64, with NaN for what is missing: empty cells, text that is not a number, inf and -inf."""
    if kind == "boolean" and not pd.api.types.is_numeric_dtype(col):
        lookup = {
            "true": 1.0,
            "yes": 1.0,
            "y": 1.0,
            "t": 1.0,
            "false": 0.0,
            "no": 0.0,
            "n": 0.0,
            "f": 0.0,
        }
        return col.map(
            lambda v: lookup.get(str(v).strip().lower(), np.nan) if pd.notna(v) else np.nan
        ).to_numpy(float)
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        values = col.to_numpy(
            dtype=float, na_value=np.nan
        )  # a float64 column is returned as it is, not copied
    elif isinstance(col.dtype, pd.CategoricalDtype):  # each distinct value parsed once
        parsed = pd.to_numeric(pd.Series(col.cat.categories.astype(str)), errors="coerce").to_numpy(
            float
        )
        values = np.append(parsed, np.nan)[np.asarray(col.cat.codes)]
    else:
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    infinite = np.isinf(values)
    if infinite.any():
        values = np.where(infinite, np.nan, values)
    return values


def category_codes(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Each row's position in the column's distinct values (-1: missing) and those values as text. A
    categorical column (as LayerLab's CSV reader gives) costs nothing; others are hashed once by pandas."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return np.asarray(col.cat.codes), col.cat.categories.astype(str)
    codes, uniques = pd.factorize(col)
    return codes, pd.Index(uniques).astype(str)


def encode_rows(frame: pd.DataFrame, state: dict, rows: np.ndarray | None = None) -> np.ndarray:
    """Turn raw rows into model inputs exactly as training did, from the fitted preprocessing `state` (missing
    columns are an error). `rows` picks and orders the rows to encode (all of them by default)."""
    if not state.get("text") and "columns" not in state:
        raise InputError(
            "this model's saved preprocessing cannot encode new rows (its dataset was stored as token "
            "ids by an older LayerLab): prepare the dataset again on the Data page and retrain."
        )
    needed = [c["name"] for c in state.get("columns") or []] + (
        state["text"]["columns"] if state.get("text") else []
    )
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(
            f"the data lacks the column(s) {', '.join(missing)} the model was trained on. "
            "Add them (same names as in training)."
        )
    n = len(frame) if rows is None else len(rows)
    # The other columns first, then the text's token ids: side by side in one row (a model's two inputs).
    encoders, width = _column_encoders(frame, state) if state.get("columns") else ([], 0)
    out = np.zeros((n, width), np.float32)
    order = np.arange(n) if rows is None else np.asarray(rows)
    # Blocks of rows small enough that their output stays in cache while each column is written, on all cores.
    threaded(
        lambda b: _encode_block(encoders, order[b : b + ENCODE_BLOCK], out[b : b + ENCODE_BLOCK]),
        range(0, n, ENCODE_BLOCK),
    )
    if not state.get("text"):
        return out
    t, length = state["text"], state["text"]["max_length"]
    texts = frame[t["columns"]] if rows is None else frame[t["columns"]].iloc[rows]
    index = {w: i for i, w in enumerate(t["vocab"])}
    index[ROW_END] = -1
    ids = np.zeros((n, length), np.float32)
    for start in range(
        0, n, TEXT_BLOCK
    ):  # in blocks of rows: a word as a Python string costs about 60 bytes
        words = row_tokens(texts.iloc[start : start + TEXT_BLOCK], t["lowercase"])
        found = np.fromiter(
            map(index.get, words, itertools.repeat(1)), np.int64, len(words)
        )  # 1: <unk>
        del words
        ends = found == -1
        row = (np.cumsum(ends) - ends)[
            ~ends
        ]  # each word's row in the block: the rows ended before it
        found = found[~ends]
        counts = np.bincount(row, minlength=min(TEXT_BLOCK, n - start))
        place = np.arange(len(found)) - np.repeat(
            np.cumsum(counts) - counts, counts
        )  # its place in its row
        keep = place < length  # longer rows are cut
        ids[start + row[keep], place[keep]] = found[keep]
    return np.hstack([out, ids]) if width else ids


def _column_encoders(frame: pd.DataFrame, state: dict) -> tuple[list[tuple], int]:
    """Per fitted column, its full-length source (numbers, or codes among the fitted categories) and output
    position; the width of the encoded rows."""
    encoders, j = [], 0
    for c in state["columns"]:
        col = frame[c["name"]]
        if c["kind"] in ("numeric", "boolean"):
            values = numeric(col, c["kind"])
            if c["missing"] == "drop" and np.isnan(values).any():
                raise InputError(
                    f"column '{c['name']}' has missing values, and its rows were dropped in training: "
                    "fill them in, or choose another missing-value strategy for it."
                )
            encoders.append(("number", j, values, c["fill"], c["shift"], c["scale"]))
            j += 1
            continue
        codes, labels = category_codes(col)
        # Each distinct value's place among the fitted categories (-1: unseen); a missing value takes the fill's.
        lookup = pd.Index(c["categories"]).get_indexer(labels)
        fill = c["categories"].index(c["fill"]) if c["fill"] in c["categories"] else -1
        codes = np.append(lookup, fill).astype(np.int32)[
            codes
        ]  # a code of -1 (missing) picks the appended fill
        onehot = c["encoding"] == "onehot"
        encoders.append(("onehot" if onehot else "index", j, codes))
        j += len(c["categories"]) if onehot else 1
    return encoders, j


def _encode_block(encoders: list[tuple], rows: np.ndarray, out: np.ndarray) -> None:
    width = out.shape[1]
    for kind, j, source, *numbers in encoders:
        if kind == "number":
            fill, shift, scale = numbers
            values = source[rows]
            np.copyto(values, fill, where=np.isnan(values))
            values -= shift
            values /= scale
            out[:, j] = values
        elif kind == "onehot":  # one flat scatter: row * width + column
            codes = source[rows]
            hit = np.flatnonzero(codes >= 0)
            out.reshape(-1)[hit * width + (j + codes[hit])] = 1.0
        else:  # 0 = unseen, 1.. = the categories: an index for an embedding
            out[:, j] = source[rows] + 1


# --- images -------------------------------------------------------------------------------------------------


def decode_image(data: bytes, name: str, size: int, grayscale: bool) -> np.ndarray:
    """One PNG, JPEG, BMP, GIF or WebP file as a (channels, size, size) uint8 array; InputError if it cannot be
    read or is too large (decompression bombs are refused before decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in FORMATS:
                    raise UnidentifiedImageError(f"format {img.format}")
                if img.width * img.height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{img.width}×{img.height} pixels")
                arr = np.asarray(
                    img.convert("L" if grayscale else "RGB").resize((size, size), Image.BILINEAR)
                )
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
        SyntaxError,
    ) as e:
        raise InputError(f"{name}: unreadable or too large ({str(e)[:80]})") from None
    return arr[None] if grayscale else arr.transpose(2, 0, 1)


def as_input(x: torch.Tensor) -> torch.Tensor:
    """Images are stored as uint8: scaled to [0, 1] here, on the device, one batch at a time."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


# --- outputs ------------------------------------------------------------------------------------------------


@torch.no_grad()
def model_outputs(
    model: torch.nn.Module, x: torch.Tensor, takes_tokens: bool = False
) -> torch.Tensor:
    """The model's outputs for `x` in batches (images scaled, token ids as integers)."""
    if takes_tokens:
        x = x.long()
    if not len(x):
        return torch.zeros(0)
    return torch.cat(
        [model(as_input(x[i : i + PREDICT_BATCH])).float() for i in range(0, len(x), PREDICT_BATCH)]
    )


def probabilities(out: torch.Tensor, squashed: bool) -> torch.Tensor:
    """Each class's probability from a classifier's outputs: softmax (or sigmoid for one output, giving two
    classes) unless the model already ends in it (`squashed`)."""
    if out.shape[1] == 1:  # binary with one logit (or probability) per row
        p = out[:, 0] if squashed else torch.sigmoid(out[:, 0])
        return torch.stack([1 - p, p], 1)
    return out if squashed else torch.softmax(out, 1)


def target_units(meta: dict) -> tuple[float, float]:
    """(scale, shift) that turn a regression model's output into the target's own units."""
    target = (meta.get("preprocessing") or {}).get("target") or {}
    return float(target.get("scale", 1.0)), float(target.get("mean", 0.0))


def prediction_table(out: torch.Tensor, meta: dict, squashed: bool) -> pd.DataFrame:
    """The prediction per row: the class, its confidence and each class's probability (classification), or the
    value in the target's own units (regression). `meta`: task, classes, preprocessing."""
    if meta["task"] == "classification":
        probs = probabilities(out, squashed)
        classes = [str(c) for c in meta["classes"]]
        confidence, index = probs.max(1)
        table = pd.DataFrame(
            {
                "prediction": np.array(classes, dtype=object)[index.numpy()],
                "confidence": confidence.numpy(),
            }
        )
        for i, c in enumerate(classes):
            table[f"p({c})"] = probs[:, i].numpy()
        return table
    scale, shift = target_units(meta)
    return pd.DataFrame({"prediction": (out[:, 0] * scale + shift).numpy()})


KEY_NAME = re.compile(r"(^|[_\W])(id|uuid|key|index|name|code)$|^(id|name)([_\W]|$)", re.IGNORECASE)


def with_rows(predictions: pd.DataFrame, frame: pd.DataFrame, preprocessing: dict) -> pd.DataFrame:
    """The predictions beside the rows they came from: the user's key columns first (columns the model does not
    read that are named like a key, such as `id` or `passenger_name`, or hold a different value in every row),
    then the predictions, then the other columns."""
    used = {c["name"] for c in preprocessing.get("columns") or []} | set(
        (preprocessing.get("text") or {}).get("columns") or []
    )
    frame = frame.reset_index(drop=True)
    keys = [
        c
        for c in frame.columns
        if c not in used
        and (
            KEY_NAME.search(str(c))
            or (
                len(frame) >= 10
                and not pd.api.types.is_float_dtype(frame[c])
                and frame[c].is_unique
            )
        )
    ]
    rest = [c for c in frame.columns if c not in keys]
    return pd.concat([frame[keys], predictions, frame[rest]], axis=1)


FORMULA_LINE = re.compile("(^|[\r\n])([" + re.escape("".join(FORMULA_START)) + "])")


def _text_cell(v):
    """A text cell a spreadsheet keeps as text: each line of it (a reader may end the row at a bare CR) that starts
    like a formula gets a leading apostrophe."""
    return FORMULA_LINE.sub(lambda m: f"{m.group(1)}'{m.group(2)}", v) if isinstance(v, str) else v


def csv_bytes(table: pd.DataFrame) -> bytes:
    """CSV for a spreadsheet: no text cell can run as a formula, and a cell holding a line break is quoted (rows
    end with CRLF, so the writer quotes a bare CR as well as LF)."""
    safe = table.copy()
    for col in safe.columns:
        if not (
            pd.api.types.is_numeric_dtype(safe[col]) or pd.api.types.is_bool_dtype(safe[col])
        ):  # text,
            safe[col] = safe[col].astype(object).map(_text_cell)  # categories, dates
    safe.columns = [_text_cell(str(c)) for c in safe.columns]
    return safe.to_csv(index=False, lineterminator="\r\n").encode("utf-8")
