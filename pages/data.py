"""Data: choose a built-in set or upload a CSV; see what was prepared."""

import pandas as pd
import streamlit as st

from engine.data.builtin import BUILTINS
from engine.data.corpus import CorpusOptions
from engine.data.images import ARCHIVE_TYPES, is_archive
from engine.data.prepare import (
    prepare_again,
    prepare_builtin,
    prepare_corpus_file,
    prepare_file,
    prepare_images,
    prepare_series_file,
)
from engine.data.readers import read_table
from engine.data.series import SeriesOptions, suggest_time_column
from engine.data.store import list_datasets, load_dataset, load_preview
from engine.data.tabular import Split, TextOptions, detect_task, suggest_target, target_problem
from engine.errors import LayerLabError
from engine.portable import decode_tokens
from engine.tasks import TASKS
from ui import state
from ui.common import input_text, page, show_error
from ui.data_views import (
    augmentation_panel,
    class_balance,
    column_editor,
    health_panel,
    image_grid,
    scatter_2d,
    series_chart,
    split_inputs,
    token_preview,
)
from ui.progress import with_progress

page(
    "Data",
    "Choose the data to learn from: a built-in set, your own table (CSV, TSV, Parquet, Excel, "
    "JSON Lines) or an archive of images. Preprocessing is fitted on the training split only.",
)


READ_RATE = (
    80 * 2**20
)  # bytes/s a 2-core machine reads a CSV at: the bar's pace while the file is read


def read_upload(file_id: str, name: str, delimiter: str | None, encoding: str | None, data: bytes):
    """The uploaded table as read with these options, kept for this tab until the file or an option changes
    (every widget on the page reruns it; a large file takes seconds to read)."""
    key = (file_id, delimiter, encoding)
    kept = st.session_state.get("data.read")
    if kept is None or kept[0] != key:
        st.session_state.pop(
            "data.read", None
        )  # the old table's memory goes before the new one is read
        source = with_progress(
            lambda progress: read_table(data, name, delimiter=delimiter, encoding=encoding),
            f"Reading {name}",
            expected_s=len(data) / READ_RATE,
        )
        kept = st.session_state["data.read"] = (key, source)
    return kept[1]


def use(ds) -> None:
    state.use_dataset(ds.meta)
    state.notice(f"Now using '{ds.meta['name']}'. The Build page holds a model that fits it.")
    st.rerun()


def prepare_and_use(work, label: str, expected_s: float | None = None) -> None:
    """`work(progress)` prepares a dataset with a progress bar, and it is used; a problem is shown, and the dataset
    in use stays."""
    try:
        use(with_progress(work, label, expected_s))
    except LayerLabError as e:
        show_error(e)


TASK_LABELS = {
    "forecast": "forecast (time series)",
    "language_model": "text generation (the target is the text)",
}


def corpus_form(upload, source, column: str | None) -> None:
    """How a text becomes a language model's tokens (characters or words, the context, the vocabulary), and
    Prepare. `column`: the table's text column (None: the file is the text)."""
    k1, k2, k3 = st.columns(3)
    tokens = k1.radio(
        "Tokens",
        ["char", "word"],
        horizontal=True,
        key="data.corpus.tokens",
        format_func=lambda t: {"char": "characters", "word": "words"}[t],
        help="Characters: a small vocabulary, any word can be written. Words (and punctuation marks): fewer, more "
        "meaningful steps, but a word the vocabulary lacks becomes <unk>.",
    )
    context = k2.number_input(
        "Context (tokens)",
        4,
        2048,
        64,
        key="data.corpus.context",
        help="Tokens the model reads to predict the next.",
    )
    vocab = k3.number_input(
        "Vocabulary size",
        2,
        200_000,
        10_000,
        key="data.corpus.vocab",
        help="The most frequent tokens; others: <unk>.",
    )
    st.caption(
        "Split by position, never shuffled: the first 80% of the text trains, the next 10% validates, the last 10% "
        "tests. The vocabulary is fitted on the training part only."
    )
    if st.button(
        "Prepare text", type="primary", icon=":material/check:", key="data.prepare_corpus"
    ):
        choices = {"tokens": tokens, "context": int(context), "vocab_size": int(vocab)}
        prepare_and_use(
            lambda progress: prepare_corpus_file(
                upload.getvalue(),
                upload.name,
                CorpusOptions.parse(choices),
                text_column=column,
                source=source,
                progress=progress,
            ),
            f"Preparing {upload.name}",
        )


def series_form(upload, source, target: str) -> None:
    """A time series' choices (time column, window, horizon, stride, covariates, season, scaling) and Prepare."""
    frame = source.frame
    columns = [str(c) for c in frame.columns]
    times = ["(row order)"] + [c for c in columns if c != target]
    guess = suggest_time_column(frame.drop(columns=[target]))
    s1, s2, s3, s4 = st.columns(4)
    time = s1.selectbox(
        "Time column",
        times,
        index=times.index(guess) if guess in times else 0,
        key=f"data.series.time.{upload.file_id}",
        help="The column of dates or times that orders the rows. (row order): the rows are already in time order.",
    )
    window = s2.number_input(
        "Window",
        2,
        4096,
        24,
        key="data.series.window",
        help="Steps of history each forecast reads.",
    )
    horizon = s3.number_input(
        "Horizon", 1, 1024, 6, key="data.series.horizon", help="Steps ahead each forecast predicts."
    )
    stride = s4.number_input(
        "Stride",
        1,
        10_000,
        1,
        key="data.series.stride",
        help="Steps from one window's start to the next.",
    )
    s5, s6, s7 = st.columns([2, 1, 1])
    others = [
        c for c in columns if c not in (target, time) and pd.api.types.is_numeric_dtype(frame[c])
    ]
    covariates = s5.multiselect(
        "Covariates",
        others,
        key=f"data.series.covariates.{upload.file_id}",
        help="Other numeric columns the model reads beside the target's history (temperature, price, …).",
    )
    season = s6.number_input(
        "Season (steps)",
        0,
        10_000,
        0,
        key="data.series.season",
        help="The length of a season in steps, e.g. 24 for hours in a day, 7 for days in a week (0: none). Adds "
        "the seasonal naive forecast to the baselines.",
    )
    scale = s7.toggle(
        "Scale per series",
        True,
        key="data.series.scale",
        help="Scale each column by its training part's mean and spread; forecasts are reported in the series' "
        "own units either way.",
    )
    st.caption(
        "Split by time, never shuffled: the first 70% of the series trains, the next 15% validates, the last 15% "
        "tests. Scaling is fitted on the training part only."
    )
    if st.button(
        "Prepare series", type="primary", icon=":material/check:", key="data.prepare_series"
    ):
        choices = {
            "target": target,
            "time_column": None if time == times[0] else time,
            "covariates": covariates,
            "window": int(window),
            "horizon": int(horizon),
            "stride": int(stride),
            "season": int(season) or None,
            "scale": scale,
        }
        prepare_and_use(
            lambda progress: prepare_series_file(
                upload.getvalue(),
                upload.name,
                SeriesOptions.parse(choices),
                source=source,
                progress=progress,
            ),
            f"Preparing {upload.name}",
        )


builtin_tab, upload_tab, saved_tab = st.tabs(
    [
        ":material/dataset: Built-in",
        ":material/upload_file: Upload a file",
        ":material/folder_open: Your datasets",
    ],
    key="data.tab",
)
with builtin_tab:
    # The picker opens on the set in use (with its samples, noise and seed), so "Use this dataset" changes nothing
    # until the user picks something else.
    current = state.dataset_meta().get("builtin") or {}
    names = list(BUILTINS)
    name = st.selectbox(
        "Dataset",
        names,
        format_func=lambda k: BUILTINS[k].title,
        key="data.builtin",
        index=names.index(current["name"]) if current.get("name") in BUILTINS else 0,
    )
    b = BUILTINS[name]
    st.caption(b.description)
    n_samples, noise, seed = b.samples, 0.1, 0
    if b.generated:
        c1, c2, c3 = st.columns(3)
        n_samples = c1.slider(
            "Samples",
            100,
            10000,
            int(current.get("n_samples", b.samples) if current.get("name") == name else b.samples),
            step=100,
            key=f"data.n_samples.{name}",
        )
        noise = c2.slider(
            "Noise", 0.0, 0.5, float(current.get("noise", 0.1)), step=0.01, key="data.noise"
        )
        seed = c3.number_input("Seed", 0, 2**31 - 1, int(current.get("seed", 0)), key="data.seed")
    in_use = state.dataset_meta().get("split") or {}
    split = split_inputs("data.builtin_split", in_use) if b.split else Split()
    same = (
        current == {"name": name, "n_samples": n_samples, "noise": noise, "seed": int(seed)}
        or (not b.generated and current.get("name") == name)
    ) and (not b.split or split == Split.model_validate(in_use))
    if st.button(
        "In use" if same else "Use this dataset",
        type="secondary" if same else "primary",
        icon=":material/check:",
        key="data.use_builtin",
        disabled=same or split is None,
    ):
        prepare_and_use(
            lambda progress: prepare_builtin(
                name, n_samples=n_samples, noise=noise, seed=int(seed), split=split
            ),
            f"Preparing {b.title}",
            expected_s=0.5 + n_samples / 2000,
        )

with upload_tab:
    upload = st.file_uploader(
        "Table or images",
        type=["csv", "tsv", "txt", "parquet", "xlsx", "jsonl", "ndjson", *ARCHIVE_TYPES],
        key="data.upload",
        help="A table (CSV, TSV, Parquet, Excel .xlsx or JSON Lines) with a "
        "header row, or a zip or tar archive of images.",
    )
    if upload is not None and is_archive(upload.name):
        st.caption(
            "Images: one folder per class (cats/…, dogs/…) of PNG, JPEG, BMP, GIF or WebP files; MNIST's "
            "idx files (gzipped or not); or CIFAR-10's python batches (cifar-10-python.tar.gz as downloaded). "
            "MNIST and CIFAR keep their own size and colour."
        )
        i1, i2 = st.columns(2)
        size = i1.selectbox(
            "Resize to",
            [16, 28, 32, 64, 96],
            index=2,
            key="data.img_size",
            format_func=lambda n: f"{n}×{n} pixels",
        )
        grayscale = (
            i2.radio("Colour", ["RGB", "grayscale"], horizontal=True, key="data.img_mode")
            == "grayscale"
        )
        image_split = split_inputs("data.images_split")
        if st.button(
            "Prepare images", type="primary", icon=":material/check:", key="data.prepare_images",
            disabled=image_split is None,
        ):  # fmt: skip
            prepare_and_use(
                lambda progress: prepare_images(
                    upload.getvalue(),
                    upload.name,
                    size=size,
                    grayscale=grayscale,
                    progress=progress,
                    split=image_split,
                ),
                f"Reading the images in {upload.name}",
            )
    elif (
        upload is not None
        and upload.name.lower().endswith(".txt")
        and (
            st.radio(
                "Read it as",
                ["plain text", "a table"],
                horizontal=True,
                key=f"data.txt_kind.{upload.file_id}",
                help="Plain text: a corpus for a language model to learn to write like. A table: columns separated by "
                "commas, tabs or semicolons.",
            )
            == "plain text"
        )
    ):
        corpus_form(upload, None, None)
    elif upload is not None:
        o1, o2 = st.columns(2)
        delimiter = o1.selectbox(
            "Delimiter",
            ["auto", ",", "\t", ";", "|"],
            key="data.delimiter",
            format_func=lambda d: {"auto": "detect", "\t": "tab"}.get(d, d),
            help="Text files only: which character separates the columns.",
        )
        encoding = o2.selectbox(
            "Encoding",
            ["auto", "utf-8", "latin-1"],
            key="data.encoding",
            format_func=lambda e: "detect (UTF-8, else Latin-1)" if e == "auto" else e,
            help="Text files only.",
        )
        try:
            source = read_upload(
                upload.file_id,
                upload.name,
                None if delimiter == "auto" else delimiter,
                None if encoding == "auto" else encoding,
                upload.getvalue(),
            )
        except LayerLabError as e:
            show_error(e)
            source = None
        if source is not None:
            frame = source.frame
            st.caption(
                f"{len(frame):,} rows × {frame.shape[1]} columns · read as {source.describe()}"
            )
            for note in source.notices:
                st.info(note, icon=":material/info:")
            st.dataframe(frame.head(50), width="stretch", height=220)
            c1, c2, c3 = st.columns([2, 2, 1])
            columns = list(frame.columns)
            target = c1.selectbox(
                "Target column (what to predict)",
                columns,
                index=columns.index(suggest_target(frame)),
                key=f"data.target.{upload.file_id}",
                help="Suggested: a column named like a target (label, class, target, …), else the "
                "last column that is not mostly empty, free text or an ID.",
            )
            if problem := target_problem(frame[target]):
                st.warning(
                    f"'{target}' is an unlikely target: {problem}. Pick the column you want to predict.",
                    icon=":material/warning:",
                )
            detected = detect_task(frame[target])
            task = c2.radio(
                "Task",
                ["classification", "regression", "forecast", "language_model"],
                index=["classification", "regression"].index(detected),
                horizontal=True,
                key=f"data.task.{target}",
                format_func=lambda t: TASK_LABELS.get(t, t),
                help=f"Detected: {detected}. Change it if that is wrong. Forecast: the target is a series "
                "in time, and the model predicts its next values from the ones before.",
            )
            if task == "forecast":
                series_form(upload, source, target)
            elif task == "language_model":
                corpus_form(upload, source, target)
            else:
                split_seed = c3.number_input("Split seed", 0, 2**31 - 1, 0, key="data.split_seed")
                st.markdown("**Columns**")
                plans = column_editor(frame, target, key=f"data.columns.{upload.file_id}.{target}")
                text = None
                if any(p.role == "feature" and p.kind == "text" for p in plans):
                    t1, t2 = st.columns(2)
                    text = TextOptions(
                        vocab_size=t1.number_input(
                            "Vocabulary size",
                            10,
                            200_000,
                            10_000,
                            key="data.vocab",
                            help="Keep the most frequent words; the rest become <unk>.",
                        ),
                        max_length=t2.number_input(
                            "Tokens per row",
                            4,
                            2048,
                            64,
                            key="data.maxlen",
                            help="Longer texts are cut, shorter ones padded with <pad>.",
                        ),
                    )
                table_split = split_inputs("data.table_split")
                if table_split:
                    st.caption(
                        f"Split: {1 - table_split.val - table_split.test:.0%} train · {table_split.val:.0%} "
                        f"validation · {table_split.test:.0%} test (stratified for classification). Every "
                        "statistic (medians, scales, categories, vocabulary) is fitted on the training split only."
                    )
                if st.button(
                    "Prepare dataset", type="primary", icon=":material/check:", key="data.prepare",
                    disabled=table_split is None,
                ):  # fmt: skip
                    prepare_and_use(
                        lambda progress: prepare_file(
                            upload.getvalue(),
                            upload.name,
                            target,
                            task=task,
                            plans=plans,
                            text=text,
                            seed=int(split_seed),
                            split=table_split,
                            source=source,
                            delimiter=None if delimiter == "auto" else delimiter,
                            encoding=None if encoding == "auto" else encoding,
                            progress=progress,
                        ),
                        f"Preparing {upload.name}",
                    )

with saved_tab:
    saved = list_datasets()
    if saved:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "name": m["name"],
                        "task": m["task"],
                        "rows": sum(m["sizes"].values()),
                        "input": str(tuple(m["input_shape"])),
                        "classes": len(m["classes"] or []) or "–",
                        "id": m["id"],
                    }
                    for m in saved
                ]
            ),
            hide_index=True,
            width="stretch",
        )
        pick = st.selectbox(
            "Dataset",
            [m["id"] for m in saved],
            key="data.saved",
            format_func=lambda i: next(m["name"] for m in saved if m["id"] == i),
        )
        if st.button("Use this dataset", key="data.use_saved", icon=":material/check:"):
            use(load_dataset(pick))

st.divider()
ds = load_dataset(st.session_state[state.DATASET])
meta = ds.meta
st.subheader(f"In use: {meta['name']}")
shapes = (
    ", ".join(f"{n} {tuple(p['shape'])}" for n, p in meta["inputs"].items())
    if meta.get("inputs")
    else f"input shape {tuple(meta['input_shape'])}"
)
st.caption(f"{TASKS[meta['task']].title} · {shapes} · source {meta['source']}")
m = st.columns(5)
rows = TASKS[ds.task].samples
m[0].metric(f"Train {rows}", f"{meta['sizes']['train']:,}")
m[1].metric(f"Validation {rows}", f"{meta['sizes']['val']:,}")
m[2].metric(f"Test {rows}", f"{meta['sizes']['test']:,}")
if meta.get("inputs"):
    m[3].metric(
        "Inputs",
        len(meta["inputs"]),
        help=f"{input_text(meta)} per row: "
        + ", ".join(f"{name} {tuple(p['shape'])}" for name, p in meta["inputs"].items()),
    )
else:
    m[3].metric("Input", input_text(meta), help=f"shape {tuple(meta['input_shape'])} per row")
if ds.task == "forecast":
    prep = meta["preprocessing"]
    m[4].metric(
        "Horizon",
        f"{prep['horizon']} steps",
        help=f"Each forecast reads {prep['window']} steps of history and predicts the next {prep['horizon']}.",
    )
else:
    m[4].metric("Classes", ds.num_classes or "–")
notes = meta.get("notices") or []
if notes:  # one summary line, the details folded
    with st.expander(
        f":material/info: {len(notes)} preparation note(s): "
        + notes[0][:90]
        + ("…" if len(notes[0]) > 90 or len(notes) > 1 else "")
    ):
        st.markdown("\n".join(f"- {n}" for n in notes))
if meta.get("health"):
    fix = health_panel(ds)
    if fix:
        prepare_and_use(
            lambda progress: prepare_again(
                ds,
                ignore=fix.get("columns", []),
                drop_duplicates=fix["kind"] == "drop_duplicates",
                progress=progress,
            ),
            "Preparing again",
        )
left, right = st.columns(2)
with left:
    if ds.task == "classification":
        st.plotly_chart(class_balance(ds), width="stretch")
    elif ds.task == "language_model":
        prep = meta["preprocessing"]
        st.caption(
            f"A vocabulary of {meta['vocab_size']:,} {'characters' if prep['tokens'] == 'char' else 'words and marks'}"
            f" (id 0, <unk>, for any other); each window holds {prep['context']} tokens, and its targets are the "
            "same window one token later."
        )
    else:
        target = (meta.get("preprocessing") or {}).get("target", {})
        st.caption(
            f"Target '{target.get('name')}': mean {target.get('mean', 0):.3g}, "
            f"standard deviation {target.get('scale', 1):.3g} (standardized for training; "
            "errors are reported in the original units)."
        )
with right:
    if ds.task == "forecast":
        st.plotly_chart(series_chart(ds), width="stretch")
    elif ds.task == "language_model":
        st.caption("Training windows, as the model reads them:")
        for row in ds.tensors["x_train"][:4]:
            st.code(decode_tokens(row.long().tolist(), meta), language=None, wrap_lines=True)
    elif ds.meta.get("vocab"):
        token_preview(ds)
    elif len(ds.input_shape) == 3:
        st.caption("Sample images (training split)")
        image_grid(ds)
    elif ds.input_shape == (2,):
        st.plotly_chart(scatter_2d(ds), width="stretch")
if len(ds.input_shape) == 3:
    augmentation_panel(ds)
preview = load_preview(ds.id)
if preview is not None:
    with st.expander("Raw rows (first 200)"):
        st.dataframe(preview, width="stretch")
