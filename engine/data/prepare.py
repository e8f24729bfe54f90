"""One entry point per data source; the Data page and the CLI both call these."""

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.builtin import BUILTINS, load_builtin
from engine.data.corpus import CorpusOptions, corpus_text, prepare_corpus
from engine.data.health import health_report
from engine.data.images import archive_stem, read_image_archive
from engine.data.readers import TableSource, decode_text, read_table, sniff_format
from engine.data.series import SeriesOptions, prepare_series
from engine.data.store import Dataset, Staged, datasets_dir, image_preprocessing, save_dataset
from engine.data.tabular import (
    ColumnPlan,
    Split,
    TextOptions,
    model_inputs,
    prepare_table,
    split_indices,
    suggest_columns,
)
from engine.errors import DataError
from engine.limits import DATA_BYTES
from engine.progress import Progress, part, quiet
from engine.workspace import atomic_write_json, read_json

SOURCE, RECIPE = (
    "source.bin",
    "recipe.json",
)  # an uploaded table kept beside its dataset, and how it was prepared
KEEP_SOURCE_BYTES = 256 * 2**20
ROWS, KEEP_ROWS_BYTES = "rows.parquet", 64 * 2**20


def prepare_frame(
    df: pd.DataFrame,
    target: str,
    *,
    name: str,
    source: str,
    task: str | None = None,
    plans: list[ColumnPlan] | None = None,
    text: TextOptions | None = None,
    seed: int = 0,
    root: Path | None = None,
    drop_duplicates: bool = False,
    progress: Progress | None = None,
    notices: list[str] = (),
    files: Callable[[Path], None] | None = None,
    split: Split | None = None,
) -> Dataset:
    """`notices`: what reading the file changed (renamed columns), listed before preparing's own; `files`: writes
    more files into the dataset's folder before it is moved into place (see `save_dataset`); `split`: the
    validation and test shares (default 15% each)."""
    split = split or Split()
    progress = progress or quiet
    progress(0.0, "Splitting the rows")
    staged: list[Staged] = []  # the dataset's folder, made once the encoded rows' width is known

    def allocate(sizes: dict, width: int, y_dtype) -> tuple[np.ndarray, np.ndarray]:
        staged.append(Staged(root, sizes, (width,), np.float32, y_dtype))
        return staged[0].x, staged[0].y

    try:
        info = prepare_table(
            df,
            target,
            task,
            plans=plans,
            text=text,
            seed=seed,
            split=split,
            name=name,
            drop_duplicates=drop_duplicates,
            progress=part(progress, 0, 0.6),
            allocate=allocate,
        )
        info.notices[:0] = notices
        progress(0.6, "Checking the data's health and saving")
        extra = {"split": split.model_dump()}
        if info.preprocessing.get("text"):
            vocab = info.preprocessing["text"]["vocab"]
            extra.update(vocab=vocab, vocab_size=len(vocab))
            if model_inputs(info.preprocessing):
                extra["inputs"] = model_inputs(info.preprocessing)
        return save_dataset(
            name=name,
            source=source,
            task=info.task,
            x=info.x,
            y=info.y,
            classes=info.classes,
            feature_names=info.feature_names,
            preprocessing=info.preprocessing,
            notices=info.notices,
            preview=df,
            root=root,
            extra=extra,
            meanwhile=lambda: {
                "health": health_report(
                    info.frame, target, info.task, info.x, info.y, info.classes, info.columns
                )
            },
            files=lambda folder: (
                progress(0.9, "Keeping your rows for the Evaluate page"),
                keep_rows(folder, info.frame, info.order),
                files and files(folder),
            ),
            staged=staged[0],
        )
    finally:
        for folder in staged:  # moved into place by now, unless preparing failed
            folder.discard()


def keep_rows(folder: Path, frame: pd.DataFrame, order) -> None:
    """The user's own rows (every column, as read) in split order, beside the tensors, when they are small enough
    (KEEP_ROWS_BYTES): Evaluate shows a misclassified row as the user knows it, not as scaled numbers."""
    if (
        frame.memory_usage(deep=False).sum() > KEEP_ROWS_BYTES
        or frame.memory_usage(deep=True).sum() > KEEP_ROWS_BYTES
    ):
        return
    rows = frame.iloc[order].reset_index(drop=True)
    rows.columns = [str(c) for c in rows.columns]
    try:
        rows.to_parquet(folder / ROWS, index=False)
    except (
        ValueError,
        TypeError,
        ArithmeticError,
    ):  # mixed-type object columns pyarrow will not write
        rows.astype({c: str for c in rows.columns if rows[c].dtype == object}).to_parquet(
            folder / ROWS, index=False
        )


def kept_rows(ds: Dataset, split: str, rows) -> pd.DataFrame | None:
    """The user's rows `rows` (positions in the split) as read, or None where they were not kept."""
    path = ds.path / ROWS
    if not path.exists():
        return None
    positions = ds.meta.get("positions", {}).get(split)  # a fold's re-cut rows (engine.data.folds)
    if positions is not None:
        picked = [int(positions[int(r)]) for r in rows]
    else:
        sizes = ds.meta["sizes"]
        start = {"train": 0, "val": sizes["train"], "test": sizes["train"] + sizes["val"]}[split]
        picked = [start + int(r) for r in rows]
    return pd.read_parquet(path).iloc[picked].reset_index(drop=True)


def prepare_file(
    data: bytes,
    filename: str,
    target: str,
    *,
    task: str | None = None,
    plans: list[ColumnPlan] | None = None,
    text: TextOptions | None = None,
    seed: int = 0,
    delimiter: str | None = None,
    encoding: str | None = None,
    root: Path | None = None,
    drop_duplicates: bool = False,
    source: TableSource | None = None,
    progress: Progress | None = None,
    split: Split | None = None,
) -> Dataset:
    """Any table file the Data page reads (CSV, TSV, Parquet, Excel, JSON Lines). The file and how it was prepared
    are kept beside the dataset (up to KEEP_SOURCE_BYTES), so a health finding's fix can prepare it again.
    `source`: the file as already read with these options (the Data page has it), to save reading it twice."""
    keep = len(data) <= KEEP_SOURCE_BYTES
    with ThreadPoolExecutor(1) as pool:
        aside = None
        try:
            start = 0.0
            if source is None:
                (progress or quiet)(0.0, f"Reading {Path(filename).name}")
                source, start = (
                    read_table(data, filename, delimiter=delimiter, encoding=encoding),
                    0.3,
                )
            # Written while the table is prepared (after reading it, which takes every core)
            aside = pool.submit(_write_aside, data, datasets_dir(root)) if keep else None
            frame = source.frame
            plans = plans if plans is not None else suggest_columns(frame, target)

            def kept(folder: Path) -> None:  # the file and how it was prepared, beside the tensors
                os.replace(aside.result(), folder / SOURCE)
                atomic_write_json(
                    folder / RECIPE,
                    {
                        "filename": Path(filename).name,
                        "target": target,
                        "task": task,  # None: detected again, alike
                        "seed": seed,
                        "delimiter": delimiter,
                        "encoding": encoding,
                        "drop_duplicates": drop_duplicates,
                        "split": (split or Split()).model_dump(),
                        "text": (text or TextOptions()).model_dump(),
                        "plans": [p.model_dump() for p in plans],
                    },
                )

            return prepare_frame(
                frame,
                target,
                name=Path(filename).stem,
                source=f"upload:{Path(filename).name}",
                task=task,
                plans=plans,
                text=text,
                seed=seed,
                root=root,
                notices=source.notices,
                drop_duplicates=drop_duplicates,
                progress=part(progress, start, 1.0),
                files=kept if keep else None,
                split=split,
            )
        except BaseException:
            if aside is not None:
                Path(aside.result()).unlink(missing_ok=True)
            raise


def prepare_series_file(
    data: bytes,
    filename: str,
    options: SeriesOptions,
    *,
    root: Path | None = None,
    source: TableSource | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """A table file (any format the Data page reads) holding a time series, as a forecasting dataset."""
    if source is None:
        (progress or quiet)(0.0, f"Reading {Path(filename).name}")
        source = read_table(data, filename)
    return prepare_series(
        source.frame,
        options,
        name=Path(filename).stem,
        source=f"upload:{Path(filename).name}",
        root=root,
        progress=part(progress, 0.3, 1.0),
    )


def prepare_corpus_file(
    data: bytes,
    filename: str,
    options: CorpusOptions,
    *,
    text_column: str | None = None,
    root: Path | None = None,
    source: TableSource | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """A text to learn to generate: a plain text file (`text_column` None), or a table's text column."""
    if text_column is None:
        if len(data) > DATA_BYTES.value:
            raise DATA_BYTES.refuse(
                Path(filename).name, f"it holds {DATA_BYTES.describe(len(data))}", "Use a part."
            )
        if sniff_format(data) != "text":  # an image, an archive, a program
            raise DataError(
                f"'{Path(filename).name}' holds binary data, not text. Choose a plain text file (UTF-8 or Latin-1)."
            )
        text = decode_text(data, Path(filename).name)[0]
    else:
        if source is None:
            (progress or quiet)(0.0, f"Reading {Path(filename).name}")
            source = read_table(data, filename)
        text = corpus_text(source.frame, text_column)
    if not text.strip():
        raise DataError(f"'{Path(filename).name}' holds no text to learn from.")
    return prepare_corpus(
        text,
        options,
        name=Path(filename).stem,
        source=f"upload:{Path(filename).name}",
        root=root,
        progress=part(progress, 0.2, 1.0),
    )


def _write_aside(data: bytes, folder: Path) -> str:
    """The uploaded file in a temporary file of the datasets folder (moved into the dataset's when it exists). Not
    synced to disk, like the tensors: a copy for preparing again, which a crash costs nothing but that."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".source-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return tmp


def can_prepare_again(ds: Dataset) -> bool:
    return (ds.path / RECIPE).exists() and (ds.path / SOURCE).exists()


def prepare_again(
    ds: Dataset,
    *,
    ignore: list[str] = (),
    drop_duplicates: bool = False,
    progress: Progress | None = None,
) -> Dataset:
    """The same file prepared again as before, with more columns ignored or duplicate rows dropped (the health
    report's one-click fixes)."""
    recipe = read_json(ds.path / RECIPE)
    if recipe is None or not (ds.path / SOURCE).exists():
        raise DataError(
            f"'{ds.meta['name']}' was not prepared from a file LayerLab kept, so it cannot be prepared "
            "again here: upload the file on the Data page and change the column plan there."
        )
    plans = [
        ColumnPlan.model_validate(
            {**p, "role": "ignore", "note": "ignored by a health fix"} if p["name"] in ignore else p
        )
        for p in recipe["plans"]
    ]
    return prepare_file(
        (ds.path / SOURCE).read_bytes(),
        recipe["filename"],
        recipe["target"],
        task=recipe["task"],
        plans=plans,
        text=TextOptions.model_validate(recipe["text"]),
        seed=recipe["seed"],
        delimiter=recipe["delimiter"],
        encoding=recipe["encoding"],
        drop_duplicates=drop_duplicates or recipe["drop_duplicates"],
        root=ds.path.parent,
        progress=progress,
        split=Split.model_validate(recipe.get("split") or {}),
    )


def prepare_builtin(
    name: str,
    *,
    n_samples: int | None = None,
    noise: float = 0.1,
    seed: int = 0,
    root: Path | None = None,
    split: Split | None = None,
) -> Dataset:
    """A built-in set (of its usual size unless `n_samples` says otherwise); its meta records how it was made
    (`builtin`), so the Data page's picker shows the set in use. `split`: the validation and test shares of a
    table or labelled set (a series and a text keep theirs: in time order)."""
    if name in BUILTINS and n_samples is None:
        n_samples = BUILTINS[name].samples
    ds = _prepare_builtin(name, n_samples=n_samples, noise=noise, seed=seed, root=root,
                          split=split or Split())  # fmt: skip
    ds.meta["builtin"] = {"name": name, "n_samples": n_samples, "noise": noise, "seed": seed}
    atomic_write_json(ds.path / "meta.json", ds.meta)
    return ds


def _prepare_builtin(
    name: str, *, n_samples: int, noise: float, seed: int, root: Path | None, split: Split
) -> Dataset:
    if name not in BUILTINS:
        raise DataError(f"unknown built-in dataset '{name}'. Choose one of: {', '.join(BUILTINS)}.")
    b = BUILTINS[name]
    if b.generated and not 50 <= n_samples <= 200_000:
        raise DataError(f"choose between 50 and 200,000 samples (got {n_samples}).")
    loaded = load_builtin(name, n_samples=n_samples, noise=noise, seed=seed)
    title = f"{b.title} (n={n_samples}, noise={noise:g})" if b.generated else b.title
    if "corpus" in loaded:
        return prepare_corpus(
            loaded["corpus"],
            CorpusOptions.parse(loaded["options"]),
            name=title,
            source=f"builtin:{name}",
            root=root,
        )
    if "series" in loaded:
        return prepare_series(
            loaded["series"],
            SeriesOptions.parse(loaded["options"]),
            name=title,
            source=f"builtin:{name}",
            root=root,
        )
    if "frame" in loaded:
        return prepare_frame(
            loaded["frame"],
            loaded["target"],
            name=title,
            source=f"builtin:{name}",
            seed=seed,
            root=root,
            split=split,
        )
    labels = loaded["labels"]
    splits = split_indices(len(labels), labels, True, split.val, split.test, seed)
    y = {k: labels[v] for k, v in splits.items()}
    if "tokens" in loaded:  # text: token ids per position, with the vocabulary saved alongside
        tokens, vocab = loaded["tokens"], loaded["vocab"]
        words = [" ".join(vocab[t] for t in row if t) for row in tokens[:200]]
        preview = pd.DataFrame(
            {"label": [loaded["classes"][c] for c in labels[:200]], "text": words}
        )
        return save_dataset(
            name=title,
            source=f"builtin:{name}",
            task="classification",
            x={k: tokens[v] for k, v in splits.items()},
            y=y,
            classes=loaded["classes"],
            feature_names=[f"token{i}" for i in range(tokens.shape[1])],
            # as a fitted text column: new rows with a "text" column are encoded by the same code
            preprocessing={
                "columns": [],
                "text": {
                    "columns": ["text"],
                    "vocab": vocab,
                    "max_length": int(tokens.shape[1]),
                    "lowercase": True,
                },
            },
            notices=[],
            preview=preview,
            root=root,
            extra={"vocab": vocab, "vocab_size": len(vocab), "split": split.model_dump()},
        )
    # Images: already scaled to [0, 1]; no fitted preprocessing needed.
    images = loaded["images"]
    flat = pd.DataFrame(images.reshape(len(images), -1)[:200, :64])
    flat.insert(0, "label", labels[:200])
    return save_dataset(
        name=title,
        source=f"builtin:{name}",
        task="classification",
        x={k: images[v] for k, v in splits.items()},
        y=y,
        classes=loaded["classes"],
        feature_names=[f"px{i}" for i in range(int(np.prod(images.shape[1:])))],
        preprocessing=image_preprocessing(images.shape),
        notices=[],
        preview=flat,
        root=root,
        extra={"split": split.model_dump()},
    )


def prepare_images(
    data: bytes,
    filename: str,
    *,
    size: int = 32,
    grayscale: bool = False,
    seed: int = 0,
    root: Path | None = None,
    progress: Progress | None = None,
    split: Split | None = None,
) -> Dataset:
    """An image archive (class folders, MNIST idx or CIFAR-10 batches): stored as uint8, split stratified;
    skipped files are listed."""
    split = split or Split()
    found = read_image_archive(
        data, Path(filename).name, size=size, grayscale=grayscale, progress=part(progress, 0, 0.85)
    )
    (progress or quiet)(0.85, f"Saving {len(found.labels):,} images")
    splits = split_indices(len(found.labels), found.labels, True, split.val, split.test, seed)
    notices = (
        [
            f"Skipped {len(found.skipped)} file(s): "
            + "; ".join(found.skipped[:10])
            + (" …" if len(found.skipped) > 10 else "")
        ]
        if found.skipped
        else []
    )
    counts = np.bincount(found.labels, minlength=len(found.classes))
    preview = pd.DataFrame({"class": found.classes, "images": counts})
    return save_dataset(
        name=archive_stem(filename),
        source=f"upload:{Path(filename).name}",
        task="classification",
        x={k: found.images[v] for k, v in splits.items()},
        y={k: found.labels[v] for k, v in splits.items()},
        classes=found.classes,
        feature_names=[f"px{i}" for i in range(int(np.prod(found.images.shape[1:])))],
        preprocessing=image_preprocessing(found.images.shape),
        notices=notices,
        preview=preview,
        root=root,
        extra={"skipped": found.skipped, "split": split.model_dump()},
    )
