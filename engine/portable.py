"""Preparing new data and turning a model's outputs into predictions, with only the standard library, NumPy,
pandas, Pillow and PyTorch.

This file ships verbatim inside every bundle's predict.py, so a bundle predicts where LayerLab is not
installed; LayerLab's own training, Predict page and CLI call the same functions, so both prepare data
exactly alike. It must not import from `engine` (a test runs the bundle's predict.py with `engine` blocked).
"""

import io
import os
import re
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

ENCODE_BLOCK = 16384
TOKEN = re.compile(r"[\w']+", re.UNICODE)
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

TEXT_ROWS = 65536  # rows of token ids written at a time
# text tokenized at a time, in characters (bytes of the text pyarrow holds), whole rows: bounds scratch memory
TEXT_CHARS = 1 << 23
# A word's characters: what the regular expression [\w']+ takes (Python's \w is str.isalnum() or "_"). ASCII bytes
# by table; other characters are looked up once per distinct character.
ASCII_WORD = np.array(
    [chr(b).isalnum() or chr(b) in "_'" if b < 128 else False for b in range(256)]
)
# the low k bytes of a word's first 8, for k = 0..8
WORD_MASK = np.array([(1 << 8 * k) - 1 for k in range(8)] + [2**64 - 1], np.uint64)
HASH = tuple(np.uint64(m) for m in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


class Tokens(NamedTuple):
    """A text's words: how many each row has, each word in reading order as its index in `words` (the distinct
    words, in order of first appearance)."""

    counts: np.ndarray
    word: np.ndarray
    words: list[str]

    def of(self, rows: np.ndarray | None) -> np.ndarray:
        """The words of these rows (all rows' when None)."""
        if rows is None:
            return self.word
        chosen = np.zeros(len(self.counts), bool)
        chosen[rows] = True
        return self.word[np.repeat(chosen, self.counts)]


def text_rows(frame: pd.DataFrame) -> list[str]:
    """Each row's text: its columns' values joined by spaces, a missing value as empty text."""
    joined = None
    for name in frame.columns:
        col = frame[name].astype(object).fillna("")
        if pd.api.types.infer_dtype(col, skipna=False) != "string":  # numbers, or a mix
            col = col.astype(str)
        joined = col if joined is None else joined + " " + col
    return [] if joined is None else joined.tolist()


def tokenize(frame: pd.DataFrame, lowercase: bool) -> Tokens:
    """Every row's words (its columns' text joined by spaces): `TOKEN.findall` of the row, each word lowercased
    when asked. No Python object is made per word: the text is scanned as UTF-8 bytes with NumPy (straight from
    pyarrow's buffers where pandas keeps the text there), a word being a run of word bytes; a block of rows' words
    are told apart by a 64-bit key (a word of up to 8 bytes is its own key, a longer one's a hash of its bytes),
    and blocks' words by their text (a tenth of the time of a regular expression, which makes a string a word)."""
    index: dict[str, int] = {}
    count_parts, word_parts = [], []
    for buf, counts, codes, first, last in _scanned(frame):
        spans = zip(first.tolist(), last.tolist(), strict=True)
        found = np.fromiter(
            (
                index.setdefault(w.lower() if lowercase else w, len(index))
                for w in (buf[a:b].decode("utf-8", "surrogatepass") for a, b in spans)
            ),
            np.int32,
            len(first),
        )
        count_parts.append(counts)
        word_parts.append(found[codes])
    return Tokens(
        np.concatenate(count_parts) if count_parts else np.zeros(0, np.int32),
        np.concatenate(word_parts) if word_parts else np.zeros(0, np.int32),
        list(index),
    )


def _scanned(frame: pd.DataFrame):
    """Each block's bytes, words per row, each word's index among the block's distinct words, and those words'
    first and last+1 bytes; blocks scanned on all cores (NumPy and pandas release the GIL), a block per core
    ahead at most."""
    workers = max(os.cpu_count() or 1, 1)
    with ThreadPoolExecutor(workers) as pool:
        ahead: list = []
        for buf, starts in _text_blocks(frame):
            ahead.append((buf, pool.submit(_distinct, buf, starts)))
            if len(ahead) > workers:
                buf, done = ahead.pop(0)
                yield buf, *done.result()
        for buf, done in ahead:
            yield buf, *done.result()


def _distinct(buf: bytes, starts: np.ndarray):
    """A block's words per row, each word's index among its distinct words, and their first and last+1 bytes."""
    counts, keys, first, last = _scan(buf, starts)
    codes, uniques = pd.factorize(keys)
    where = np.empty(len(uniques), np.int64)
    where[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)  # each distinct word's first occurrence
    return counts, codes, first[where], last[where]


def _text_blocks(frame: pd.DataFrame):
    """The rows' text as UTF-8, a block of whole rows (up to TEXT_CHARS bytes, at least one row) at a time: the
    block's bytes followed by 8 zero bytes, and each row's first byte in it."""
    data = _arrow_text(frame)
    if data is not None:
        _, offsets, body = data.buffers()
        ends = np.frombuffer(offsets, np.int64)[data.offset : data.offset + len(data) + 1]
        values = np.frombuffer(body, np.uint8) if body is not None else np.zeros(0, np.uint8)
    else:  # NumPy alone (as in a bundle): the rows as Python strings, encoded a block at a time
        rows = text_rows(frame)
        ends = np.concatenate([[0], np.cumsum(np.fromiter(map(len, rows), np.int64, len(rows)))])
    start = 0
    while start < len(ends) - 1:
        stop = max(int(np.searchsorted(ends, ends[start] + TEXT_CHARS, "right")) - 1, start + 1)
        stop = min(stop, len(ends) - 1)
        if data is not None:
            buf = values[ends[start] : ends[stop]].tobytes() + bytes(8)
            yield buf, ends[start:stop] - ends[start]
        else:
            block = rows[start:stop]
            text = "".join(block)
            buf = text.encode("utf-8", "surrogatepass") + bytes(8)
            starts = ends[start:stop] - ends[start]  # characters; bytes where some take several
            if len(buf) != len(text) + 8:
                b = np.frombuffer(buf, np.uint8)
                starts = np.append(np.flatnonzero((b & 0xC0) != 0x80), len(b))[starts]
            yield buf, starts
        start = stop


def _arrow_text(frame: pd.DataFrame):
    """The rows' text as one pyarrow string array (columns joined by spaces, missing values empty), where
    pandas holds every text column in pyarrow; else None."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        return None
    if not len(frame.columns) or not all(
        isinstance(t, pd.StringDtype) and t.storage == "pyarrow" for t in frame.dtypes
    ):
        return None
    columns = [pa.array(frame[c].array).cast(pa.large_string()) for c in frame.columns]
    joined = (
        pc.binary_join_element_wise(
            *columns,
            pa.scalar(" ", pa.large_string()),
            null_handling="replace",
            null_replacement="",
        )
        if len(columns) > 1
        else pc.fill_null(columns[0], "")
    )
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def _scan(buf: bytes, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One block's words: how many each row (starting at `starts`) has, and each word's key and first and
    last+1 byte in `buf` (the rows' UTF-8, then 8 zero bytes)."""
    b = np.frombuffer(buf, np.uint8)
    word = ASCII_WORD[b]
    if (b >= 0x80).any():  # characters beyond ASCII: 2-4 bytes each
        chars = np.flatnonzero((b & 0xC0) != 0x80)  # each character's first byte
        lead = np.flatnonzero(b >= 0xC0)
        word[lead] = _word_characters(b, lead)
        # continuation bytes: as their character's first byte
        inside = np.flatnonzero((b & 0xC0) == 0x80)
        word[inside] = word[chars[np.searchsorted(chars, inside) - 1]]
    cut = np.zeros(len(b), bool)
    cut[starts] = True  # no word goes on into the next row
    first = np.flatnonzero(word & (cut | ~np.concatenate([[False], word[:-1]])))
    last = np.flatnonzero(np.concatenate([[False], word[:-1]]) & (cut | ~word))
    counts = np.diff(np.append(np.searchsorted(first, starts), len(first))).astype(np.int32)
    # 8 bytes from every position (unaligned): a word of up to 8 bytes, masked to its length, is its key
    eight = np.ndarray((len(b) - 7,), "<u8", buf, 0, (1,))
    size = last - first
    keys = eight[first] & WORD_MASK[np.minimum(size, 8)]
    long = np.flatnonzero(size > 8)
    if len(long):  # longer words: a hash of their 8-byte pieces and length
        key = _mix(keys[long] ^ size[long].astype(np.uint64))
        todo = np.arange(len(long))
        for offset in range(8, int(size.max()), 8):
            todo = todo[size[long[todo]] > offset]
            at = long[todo]
            piece = eight[first[at] + offset] & WORD_MASK[np.minimum(size[at] - offset, 8)]
            key[todo] = _mix(key[todo] * HASH[0] + piece)
        keys[long] = key
    return counts, keys, first, last


def _mix(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: every input bit flips about half the output bits."""
    h = (h ^ (h >> np.uint64(30))) * HASH[1]
    h = (h ^ (h >> np.uint64(27))) * HASH[2]
    return h ^ (h >> np.uint64(31))


def _word_characters(b: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """Whether each multi-byte character (its first byte at `lead`) is a word character; each distinct
    character is asked once."""
    padded = np.concatenate([b, np.zeros(3, np.uint8)]).astype(np.int64)
    b0, b1, b2, b3 = (padded[lead + k] for k in range(4))
    cont = lambda v: v & 0x3F  # noqa: E731
    code = np.select(
        [b0 < 0xE0, b0 < 0xF0],
        [
            (b0 & 0x1F) << 6 | cont(b1),
            (b0 & 0x0F) << 12 | cont(b1) << 6 | cont(b2),
        ],
        (b0 & 0x07) << 18 | cont(b1) << 12 | cont(b2) << 6 | cont(b3),
    )
    distinct, which = np.unique(code, return_inverse=True)
    is_word = np.fromiter(
        (chr(c).isalnum() or c == 0x5F for c in distinct.tolist()), bool, len(distinct)
    )
    return is_word[which]


def token_ids(
    tokens: Tokens, vocab: list[str], out: np.ndarray, rows: np.ndarray | None = None
) -> None:
    """Into `out` (rows × length, zeros): row i gets the first `length` words of row `rows[i]` (of row i when
    `rows` is None) by their place in `vocab` (1, <unk>, when not in it); the rest stays 0 (<pad>). Blocks of
    rows on all cores, so the scratch arrays stay small."""
    place = {w: i for i, w in enumerate(vocab)}
    lookup = np.fromiter((place.get(w, 1) for w in tokens.words), np.float32, len(tokens.words))
    length = out.shape[1]
    ends = np.cumsum(tokens.counts, dtype=np.int64)

    def block(r: int) -> None:
        source = (
            np.arange(r, min(r + TEXT_ROWS, len(out))) if rows is None else rows[r : r + TEXT_ROWS]
        )
        have = tokens.counts[source]
        counts = np.minimum(have, length)  # longer rows are cut
        kept = np.cumsum(counts, dtype=np.int64)
        # each word's place in its row
        at = np.arange(kept[-1] if len(kept) else 0) - np.repeat(kept - counts, counts)
        row = np.repeat(np.arange(r, r + len(counts)), counts)
        out[row, at] = lookup[tokens.word[np.repeat(ends[source] - have, counts) + at]]

    threaded(block, range(0, len(out), TEXT_ROWS))


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


def encode_rows(
    frame: pd.DataFrame,
    state: dict,
    rows: np.ndarray | None = None,
    tokens: Tokens | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Turn raw rows into model inputs exactly as training did, from the fitted preprocessing `state` (missing
    columns are an error). `rows` picks and orders the rows to encode (all of them by default); `tokens`: the
    frame's text already tokenized; `out`: a float32 array of zeros to encode into (rows × the encoded width)."""
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
    text = state.get("text")
    shape = (n, width + (text["max_length"] if text else 0))
    if out is None:
        out = np.zeros(shape, np.float32)
    elif out.shape != shape:
        raise ValueError(f"encoding {shape} into {out.shape}")
    order = np.arange(n) if rows is None else np.asarray(rows)
    # Blocks of rows small enough that their output stays in cache while each column is written, on all cores.
    threaded(
        lambda b: _encode_block(encoders, order[b : b + ENCODE_BLOCK], out[b : b + ENCODE_BLOCK]),
        range(0, n, ENCODE_BLOCK),
    )
    if text:
        if tokens is None:
            tokens = tokenize(frame[text["columns"]], text["lowercase"])
        token_ids(tokens, text["vocab"], out[:, width:], None if rows is None else order)
    return out


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


# --- series -------------------------------------------------------------------------------------------------


def series_times(col: pd.Series, kind: str) -> pd.Series:
    """A time column as datetimes ("datetime"; numbers as YYYYMMDD, such as 19580329) or numbers ("number"),
    NaT/NaN where a cell is not one."""
    if kind == "number":
        return pd.Series(numeric(col, "numeric"), index=col.index)
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        digits = (
            pd.Series(numeric(col, "numeric"), index=col.index).round().astype("Int64").astype(str)
        )
        return pd.to_datetime(digits, format="%Y%m%d", errors="coerce")
    with (
        warnings.catch_warnings()
    ):  # "could not infer format": each cell is parsed on its own, as wanted
        warnings.simplefilter("ignore", UserWarning)
        try:
            times = pd.to_datetime(col, errors="coerce")
        except (ValueError, TypeError):  # offsets that differ between rows (summer time): as UTC
            times = pd.to_datetime(col, errors="coerce", utc=True)
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return times


def series_values(frame: pd.DataFrame, prep: dict) -> tuple[pd.Series | None, np.ndarray]:
    """The series in time order: its times (None: the rows' order is the time) and the values of its columns
    (target first, then the covariates) as float64 (T, F), a gap filled by linear interpolation between its
    neighbours (the nearest value at either end). Rows whose time cannot be read are dropped."""
    columns, time = list(prep["columns"]), prep.get("time_column")
    missing = [c for c in ([time] if time else []) + columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"the history has no column {', '.join(repr(str(c)) for c in missing)}: it needs "
            f"{', '.join(repr(str(c)) for c in ([time] if time else []) + columns)}, as in training."
        )
    times = None
    if time:
        parsed = series_times(frame[time], prep.get("time_kind", "datetime"))
        keep = parsed.notna().to_numpy()
        if not keep.any():
            raise InputError(
                f"no cell of the time column '{time}' reads as "
                f"{'a number' if prep.get('time_kind') == 'number' else 'a date or time'}."
            )
        order = np.argsort(parsed[keep].to_numpy(), kind="stable")
        frame = frame[keep].iloc[order]
        times = parsed[keep].iloc[order].reset_index(drop=True)
    values = np.column_stack([numeric(frame[c], "numeric") for c in columns])
    for j, name in enumerate(columns):
        v, bad = values[:, j], np.isnan(values[:, j])
        if bad.all():
            raise InputError(f"the column '{name}' holds no numbers.")
        if bad.any():
            v[bad] = np.interp(np.flatnonzero(bad), np.flatnonzero(~bad), v[~bad])
    return times, values


def series_scaled(values: np.ndarray, prep: dict) -> np.ndarray:
    """Each column scaled as in training (minus its training mean, over its training spread), float32."""
    mean, std = np.asarray(prep["mean"]), np.asarray(prep["std"])
    return ((values - mean) / std).astype(np.float32)


def relative_window(x: np.ndarray, prep: dict) -> tuple[np.ndarray, np.ndarray]:
    """Windows (N, window, columns) as the model reads them (changed in place), and what to add to its outputs: with
    `relative`, the target's column minus each window's last value, and that value (N, 1); else as they are, and
    0."""
    if not prep.get("relative"):
        return x, np.zeros((len(x), 1), x.dtype)
    last = x[:, -1:, 0].copy()
    x[:, :, 0] -= last
    return x, last


def future_times(times: pd.Series | None, prep: dict, count: int) -> np.ndarray:
    """The times of the `count` steps after the history: its own calendar step where pandas can name it (daily,
    monthly, ...), else its typical step."""
    last = times.iloc[-1]
    if prep.get("time_kind") == "number":
        return last + np.arange(1, count + 1) * float(prep.get("step") or 1.0)
    freq = prep.get("freq")
    if freq:
        try:
            return pd.date_range(last, periods=count + 1, freq=freq)[1:].to_numpy()
        except ValueError:
            pass
    return (
        last + pd.to_timedelta(np.arange(1, count + 1) * float(prep.get("step") or 1.0), unit="s")
    ).to_numpy()


def forecast(model: torch.nn.Module, frame: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The next `horizon` values of the target after the history in `frame` (its last `window` rows are read), in
    the target's units, with the time of each step."""
    prep = meta["preprocessing"]
    times, values = series_values(frame, prep)
    window = int(prep["window"])
    if len(values) < window:
        raise InputError(
            f"the model reads the last {window} steps of history, and this history has {len(values)} "
            f"usable row(s): give it at least {window}."
        )
    x, last = relative_window(series_scaled(values[-window:], prep)[None], prep)
    out = model_outputs(model, torch.from_numpy(x))[0] + float(last[0, 0])
    scale, shift = target_units(meta)
    horizon = int(prep["horizon"])
    return pd.DataFrame(
        {
            "step": np.arange(1, horizon + 1),
            prep.get("time_column") or "position": future_times(times, prep, horizon)
            if times is not None
            else len(values) + np.arange(horizon),
            f"{prep['columns'][0]} (forecast)": (out[:horizon] * scale + shift).numpy(),
        }
    )


# --- text generation ----------------------------------------------------------------------------------------

WORD_TOKEN = re.compile(r"[\w']+|[^\w\s]", re.UNICODE)  # a word, or one mark of punctuation


def corpus_tokens(text: str, prep: dict) -> list[str]:
    """A text as a language model's tokens: its characters, or its words and punctuation marks ("word")."""
    if prep.get("lowercase"):
        text = text.lower()
    return list(text) if prep["tokens"] == "char" else WORD_TOKEN.findall(text)


def encode_corpus(text: str, meta: dict) -> np.ndarray:
    """The token ids of a text (0, <unk>, for a token outside the vocabulary), int64."""
    prep, vocab = meta["preprocessing"], meta["vocab"]
    if prep["tokens"] == "char":  # by code point, without a Python loop over a long text
        text = text.lower() if prep.get("lowercase") else text
        points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        known = np.array([ord(c) for c in vocab[1:]], np.uint32)
        order = np.argsort(known)
        at = np.searchsorted(known[order], points).clip(0, max(len(known) - 1, 0))
        hit = known[order][at] == points if len(known) else np.zeros(len(points), bool)
        return np.where(hit, order[at] + 1, 0).astype(np.int64)
    index = {t: i for i, t in enumerate(vocab)}
    return np.array([index.get(t, 0) for t in corpus_tokens(text, prep)], np.int64)


def decode_tokens(ids, meta: dict) -> str:
    """Token ids as text: characters joined, or words joined by spaces with no space before punctuation."""
    vocab = meta["vocab"]
    words = [vocab[int(i)] for i in ids]
    if meta["preprocessing"]["tokens"] == "char":
        return "".join(words)
    return re.sub(r" ([^\w\s'(\[{])", r"\1", " ".join(words))


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    meta: dict,
    prompt: str,
    length: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 20,
    seed: int = 0,
) -> str:
    """`length` tokens after `prompt`, each drawn from the model's scores for the next token given the last
    `context` tokens (divided by `temperature`; only the `top_k` best kept), with a seeded generator."""
    if temperature <= 0:
        raise InputError(
            "the temperature must be above 0 (0.8 is usual; lower is more predictable)."
        )
    if length < 1:
        raise InputError("the length must be at least 1 token.")
    context = int(meta["preprocessing"]["context"])
    ids = encode_corpus(prompt, meta).tolist() or [0]
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    start = len(ids)
    for _ in range(length):
        window = torch.tensor([ids[-context:]], dtype=torch.long, device=device)
        scores = model(window)[0, -1].float().cpu() / temperature
        if top_k:
            kth = torch.topk(scores, min(top_k, len(scores))).values[-1]
            scores = scores.masked_fill(scores < kth, -float("inf"))
        ids.append(int(torch.multinomial(torch.softmax(scores, -1), 1, generator=gen)))
    model.train(was_training)
    return decode_tokens(ids[start:], meta)


# --- variational autoencoders -------------------------------------------------------------------------------


def latent_layer(model: torch.nn.Module) -> torch.nn.Module | None:
    """A VAE's Gaussian latent layer (LayerLab's, or its copy in a bundle's model.py); None for other models."""
    return next((m for m in model.modules() if type(m).__name__ == "GaussianLatent"), None)


def _vae_layer(model: torch.nn.Module) -> torch.nn.Module:
    layer = latent_layer(model)
    if layer is None:
        raise InputError(
            "this model has no Gaussian latent layer, so it cannot encode or generate: train a VAE."
        )
    return layer


@torch.no_grad()
def encode_latent(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The codes (the latent means) of inputs `x` (images as stored, uint8, or numbers), in batches."""
    layer, codes = _vae_layer(model), []
    model.eval()
    for i in range(0, len(x), PREDICT_BATCH):
        model(as_input(x[i : i + PREDICT_BATCH]))
        codes.append(layer.mean_out.float())
    return torch.cat(codes) if codes else torch.zeros(0, layer.mean.out_features)


@torch.no_grad()
def decode_latent(model: torch.nn.Module, z: torch.Tensor, input_shape) -> torch.Tensor:
    """What the decoder makes of codes `z` (N, latent size): the model runs with the latent layer's output replaced
    by `z` (its encoder reads zeros, and what it makes is dropped), so any graph after the code decodes alike."""
    layer = _vae_layer(model)
    handle = layer.register_forward_hook(lambda module, args, out: z.to(out.dtype))
    try:
        model.eval()
        return model(torch.zeros(len(z), *input_shape)).float()
    finally:
        handle.remove()


def prior_samples(model: torch.nn.Module, n: int, input_shape, seed: int = 0) -> torch.Tensor:
    """`n` new samples: codes drawn from the prior N(0, I), decoded."""
    size = _vae_layer(model).mean.out_features
    z = torch.randn(n, size, generator=torch.Generator().manual_seed(seed))
    return decode_latent(model, z, input_shape)


def interpolation(
    model: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, steps: int, input_shape
):
    """`steps` samples on the straight line between the codes of inputs `a` and `b`, both ends included."""
    za, zb = encode_latent(model, torch.stack([a, b]))
    t = torch.linspace(0.0, 1.0, steps)[:, None]
    return decode_latent(model, za + t * (zb - za), input_shape)


def images_uint8(out: torch.Tensor) -> np.ndarray:
    """Generated images (N, channels, height, width, values from 0 to 1) as uint8 pictures: (N, H, W) grey or
    (N, H, W, 3) colour."""
    pixels = (out.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return pixels[:, 0] if pixels.shape[1] == 1 else pixels.transpose(0, 2, 3, 1)


def decoded_rows(out: torch.Tensor, prep: dict) -> pd.DataFrame:
    """Generated table rows in the columns' own terms: numbers unscaled, a one-hot group as its likeliest
    category, an index as the nearest category."""
    values, columns, j = out.numpy(), {}, 0
    for c in prep.get("columns") or []:
        if c["kind"] in ("numeric", "boolean"):
            columns[c["name"]] = values[:, j] * c["scale"] + c["shift"]
            j += 1
        elif c["encoding"] == "onehot":
            width = len(c["categories"])
            columns[c["name"]] = np.asarray(c["categories"], dtype=object)[
                values[:, j : j + width].argmax(1)
            ]
            j += width
        else:
            index = np.clip(np.rint(values[:, j]) - 1, 0, len(c["categories"]) - 1).astype(int)
            columns[c["name"]] = np.asarray(c["categories"], dtype=object)[index]
            j += 1
    if not columns:  # no fitted columns (a built-in set of numbers): the values as they are
        columns = {f"x{i}": values[:, i] for i in range(values.shape[1])}
    return pd.DataFrame(columns)


@torch.no_grad()
def generator_samples(model: torch.nn.Module, n: int, noise: int, seed: int = 0) -> torch.Tensor:
    """A GAN's generator on `n` noise vectors of `noise` numbers drawn from N(0, 1) with `seed`."""
    model.eval()
    z = torch.randn(n, noise, generator=torch.Generator().manual_seed(seed))
    return model(z.to(next(model.parameters()).device)).float().cpu()


def shown_samples(out: torch.Tensor, meta: dict) -> list:
    """Generated or rebuilt samples to show: pictures as uint8 nested lists, or table rows as records in the
    columns' own terms."""
    if len(meta["input_shape"]) == 3:
        return images_uint8(out).tolist()
    return decoded_rows(out.flatten(1), meta.get("preprocessing") or {}).to_dict("records")


def sample_files(out: torch.Tensor, meta: dict) -> dict[str, bytes]:
    """Generated samples as files: one PNG per image (sample_000.png, …), or the rows in samples.csv."""
    if len(meta["input_shape"]) != 3:
        return {
            "samples.csv": csv_bytes(decoded_rows(out.flatten(1), meta.get("preprocessing") or {}))
        }
    files = {}
    for i, picture in enumerate(images_uint8(out)):
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, "PNG")
        files[f"sample_{i:03d}.png"] = buffer.getvalue()
    return files
