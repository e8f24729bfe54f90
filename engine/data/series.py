"""Time series for forecasting: a table with a time column (or rows in time order) and value columns becomes
windows of history (window × columns, the target first) and the target's next `horizon` values.

With `relative` (the default) the target's column of each window and its forecast are taken relative to the
window's last value, so the model learns changes, which carry over to levels the training part never saw (a
trend); forecasting adds that value back (`engine.portable.relative_window`).

The series is split by time, never shuffled across a boundary: its first 70% trains, the next 15% validates, the
last 15% tests. A window belongs to the part its forecast falls in (its inputs may reach back into the part before,
which is the past). Each column is scaled by its training part's mean and spread, so one model fits series of any
size; the forecast is turned back into the series' units by the same numbers (`preprocessing.target`).
"""

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from engine.data.store import SPLITS, Choices, Dataset, require_columns, save_dataset
from engine.errors import DataError
from engine.limits import DATA_BYTES
from engine.portable import (
    InputError,
    numeric,
    relative_window,
    series_scaled,
    series_times,
    series_values,
)
from engine.progress import Progress, quiet

PARTS = (0.70, 0.15, 0.15)  # train, val, test: shares of the series, in time order
SERIES = "series.parquet"  # the series as prepared (time, target), beside the tensors, for Evaluate's plot
MIN_TRAIN_WINDOWS = 8


class SeriesOptions(Choices):
    """What a forecaster reads and predicts (the Data page's and the CLI's choices)."""

    target: str = Field(description="The column to forecast.")
    time_column: str | None = Field(
        None, description="The column that orders the rows (None: the rows are in time order)."
    )
    covariates: list[str] = Field(
        default_factory=list,
        description="Other columns the model reads beside the target's history.",
    )
    window: int = Field(24, ge=2, le=4096, description="Steps of history each forecast reads.")
    horizon: int = Field(6, ge=1, le=1024, description="Steps ahead each forecast predicts.")
    stride: int = Field(
        1, ge=1, le=10_000, description="Steps between one window's start and the next."
    )
    season: int | None = Field(
        None,
        ge=2,
        le=10_000,
        description="The season's length in steps (24 for hours in a day), if any.",
    )
    scale: bool = Field(True, description="Scale each column by its training mean and spread.")
    relative: bool = Field(
        True,
        description="Read each window, and forecast, relative to the window's last value of the target: a level "
        "the training part never reached (a trend) is then no different from one it did.",
    )


def time_kind(col: pd.Series) -> str:
    """How a time column is read: "datetime" (dates, or whole numbers written as YYYYMMDD) or "number"; DataError
    when it is neither."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        sample = col.dropna().head(1000)
        dated = (
            len(sample) > 0
            and sample.between(1000_01_01, 9999_12_31).all()
            and series_times(sample, "datetime").notna().mean() >= 0.9
        )
        return "datetime" if dated else "number"
    if pd.api.types.is_datetime64_any_dtype(col):
        return "datetime"
    filled = col.dropna()
    if len(filled) and series_times(filled.head(1000), "datetime").notna().mean() >= 0.9:
        return "datetime"
    raise DataError(
        f"the time column '{col.name}' holds neither dates nor numbers (e.g. {str(filled.iloc[0])[:40]!r}). "
        "Choose the column with the dates, or 'Row order' when the rows are already in time order."
    )


TIME_NAME = re.compile(
    r"(^|[_\W])(date|time|timestamp|datetime|day|month|year|week|hour|period|ds)([_\W]|$)", re.I
)


def suggest_time_column(frame: pd.DataFrame) -> str | None:
    """The column that most likely holds each row's time: one of dates or times, else one named like a time whose
    values are numbers (a year); None when no column looks like one (the rows' order is then the time)."""
    for c in frame.columns:
        col = frame[c]
        if pd.api.types.is_datetime64_any_dtype(col):
            return str(c)
        if col.dtype == object or isinstance(col.dtype, (pd.CategoricalDtype, pd.StringDtype)):
            try:
                if time_kind(col.head(200)) == "datetime":
                    return str(c)
            except DataError:
                pass
    named = [
        c
        for c in frame.columns
        if TIME_NAME.search(str(c)) and pd.api.types.is_numeric_dtype(frame[c])
    ]
    return str(named[0]) if named else None


def _calendar(times: pd.Series, kind: str) -> tuple[float, str | None]:
    """The series' typical step (seconds for dates) and, for dates, pandas' name for its calendar step."""
    if len(times) < 2:
        return 1.0, None
    if kind == "number":
        step = float(np.median(np.diff(times.to_numpy(float))))
        return (step if step > 0 else 1.0), None
    deltas = np.diff(times.to_numpy("datetime64[ns]").astype(np.int64)) / 1e9
    step = float(np.median(deltas)) if len(deltas) else 1.0
    try:
        freq = pd.infer_freq(pd.DatetimeIndex(times.iloc[-200:]))
    except (ValueError, TypeError):
        freq = None
    return (step if step > 0 else 1.0), freq


def _ranges(n: int, window: int, horizon: int) -> dict[str, tuple[int, int]]:
    """Each split's forecast origins as [first, end) in a series of n steps."""
    cut_val, cut_test = int(n * PARTS[0]), int(n * (PARTS[0] + PARTS[1]))
    bounds = {
        "train": (window, cut_val),
        "val": (max(cut_val, window), cut_test),
        "test": (max(cut_test, window), n),
    }
    return {s: (lo, hi - horizon + 1) for s, (lo, hi) in bounds.items()}


def windows(n: int, window: int, horizon: int, stride: int) -> dict[str, np.ndarray]:
    """Each split's forecast origins (the position of the first forecast step) in a series of n steps."""
    return {s: np.arange(lo, end, stride) for s, (lo, end) in _ranges(n, window, horizon).items()}


def _short_part(n: int, o: SeriesOptions) -> str | None:
    """The first part of a series of n steps that is too short for these windows (None: each has enough). Counted,
    not listed: the search for the shortest series tries lengths up to 2**30."""
    counts = {
        s: max(0, -(-(end - lo) // o.stride))
        for s, (lo, end) in _ranges(n, o.window, o.horizon).items()
    }
    empty = [s for s in SPLITS if not counts[s]]
    return empty[0] if empty else "train" if counts["train"] < MIN_TRAIN_WINDOWS else None


def _shortest(o: SeriesOptions) -> int:
    """The fewest steps a series needs for these windows (every part holds a forecast, training 8 or more)."""
    lo, hi = 1, 1 << 30
    while lo < hi:  # the parts only grow with n
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _short_part(mid, o) is None else (mid + 1, hi)
    return lo


PART_NAMES = {
    "train": "training part (the first 70%)",
    "val": "validation part (the next 15%)",
    "test": "test part (the last 15%)",
}


def _check_lengths(n: int, o: SeriesOptions) -> None:
    short = _short_part(n, o)
    if short:
        holds = (
            f"fewer than {MIN_TRAIN_WINDOWS} complete windows"
            if short == "train"
            else "no complete forecast"
        )
        raise DataError(
            f"the series has {n:,} usable steps, too few for a window of {o.window} and a horizon of {o.horizon}: "
            f"its {PART_NAMES[short]} holds {holds}. Shorten the window or the horizon, or bring a series of at "
            f"least {_shortest(o):,} steps."
        )
    if o.season and o.window < o.season * math.ceil(o.horizon / o.season):
        raise DataError(
            f"a season of {o.season} steps needs a window of at least {o.season * math.ceil(o.horizon / o.season)} "
            f"(the seasonal naive forecast repeats the last season for the {o.horizon} steps ahead): lengthen "
            "the window or leave the season empty."
        )


def prepare_series(
    frame: pd.DataFrame,
    options: SeriesOptions,
    *,
    name: str,
    source: str,
    root: Path | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Windows of the series in `frame` as a forecasting dataset (see the module's docstring)."""
    progress = progress or quiet
    o = options
    columns = [o.target, *[c for c in o.covariates if c != o.target]]
    require_columns(frame, ([o.time_column] if o.time_column else []) + columns)
    if o.time_column in columns:
        raise DataError(
            f"'{o.time_column}' is the time column: it cannot also be a value to forecast or read."
        )
    progress(0.1, "Ordering the series in time")
    prep = {
        "kind": "series",
        "time_column": o.time_column,
        "time_kind": time_kind(frame[o.time_column]) if o.time_column else None,
        "columns": columns,
        "window": o.window,
        "horizon": o.horizon,
        "stride": o.stride,
        "season": o.season,
        "relative": o.relative,
    }
    notices = []
    rows = len(frame)
    try:
        times, values = series_values(frame, prep)
    except InputError as e:
        raise DataError(str(e)) from None
    n = len(values)
    if n < rows:
        notices.append(f"{rows - n:,} row(s) whose time could not be read were left out.")
    if times is not None and times.duplicated().any():
        notices.append(
            f"{int(times.duplicated().sum()):,} time(s) appear more than once; their rows are kept in file order. "
            "A forecaster expects one row per step: aggregate the table first if these are separate series."
        )
    gaps = int(sum(np.isnan(numeric(frame[c], "numeric")).sum() for c in columns))
    if gaps:
        notices.append(f"{gaps:,} missing value(s) were filled in from their neighbours in time.")
    _check_lengths(n, o)
    origins = windows(n, o.window, o.horizon, o.stride)
    count = sum(len(v) for v in origins.values())
    need = count * o.window * len(columns) * 4
    if need > DATA_BYTES.value:
        raise DATA_BYTES.refuse(
            "the series",
            f"{count:,} windows of {o.window} × {len(columns)} values take {DATA_BYTES.describe(need)}",
            "Raise the stride or shorten the window.",
        )
    train_part = values[: int(n * PARTS[0])]
    mean = train_part.mean(0) if o.scale else np.zeros(len(columns))
    std = train_part.std(0) if o.scale else np.ones(len(columns))
    std = np.where(std > 1e-12, std, 1.0)
    prep.update(
        mean=mean.tolist(),
        std=std.tolist(),
        target={"name": o.target, "mean": float(mean[0]), "scale": float(std[0])},
    )
    if times is not None:
        prep["step"], prep["freq"] = _calendar(times, prep["time_kind"])
    prep["origins"] = {s: int(origins[s][0]) for s in SPLITS}
    progress(0.3, f"Cutting {count:,} windows")
    scaled = series_scaled(values, prep)
    steps = np.arange(o.window)
    ahead = np.arange(o.horizon)
    x = {s: scaled[origins[s][:, None] - o.window + steps] for s in SPLITS}
    y = {s: scaled[origins[s][:, None] + ahead, 0] for s in SPLITS}
    for s in SPLITS:
        x[s], last = relative_window(x[s], prep)
        y[s] -= last
    progress(0.7, "Saving")

    def keep_series(folder: Path) -> None:
        kept = pd.DataFrame(
            {"time": times if times is not None else np.arange(n), "value": values[:, 0]}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kept.to_parquet(folder / SERIES, index=False)

    return save_dataset(
        name=name,
        source=source,
        task="forecast",
        x=x,
        y=y,
        classes=None,
        feature_names=columns,
        preprocessing=prep,
        notices=notices,
        preview=frame,
        root=root,
        files=keep_series,
    )


def kept_series(ds: Dataset) -> pd.DataFrame:
    """The prepared series (time, value in the target's units) of a forecasting dataset."""
    path = ds.path / SERIES
    if not path.exists():
        raise DataError(
            f"the series of '{ds.meta['name']}' is missing from its folder: prepare the data again."
        )
    return pd.read_parquet(path)
