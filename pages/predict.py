"""Predict: new rows or images through a trained model, with the preprocessing it was trained with."""

from pathlib import Path

import numpy as np
import streamlit as st
import torch

from engine import explain
from engine.bundle import zip_bytes
from engine.data.images import decode_image
from engine.data.readers import EXTENSIONS, read_table
from engine.data.store import load_dataset
from engine.data.tabular import apply_preprocessing
from engine.errors import LayerLabError
from engine.portable import (
    IMAGE_EXTENSIONS,
    csv_bytes,
    decoded_rows,
    images_uint8,
    latent_layer,
    sample_files,
    series_values,
)
from engine.predict import (
    generate_text,
    image_tensor,
    load_predictor,
    new_samples,
    noise_size,
    novelty,
    novelty_reference,
    predict_images,
    predict_table,
)
from ui.charts import forecast_figure, probability_bars
from ui.common import page, show_error, trained_run
from ui.data_views import image_grid
from ui.draw import drawing_pad
from ui.explain_views import explain_prediction
from ui.generative_views import show_samples

page(
    "Predict",
    "Upload new rows or images, or draw one: the model prepares them exactly as in training and "
    "predicts, with each class's probability. Download the predictions as CSV.",
)


@st.cache_resource(max_entries=4, show_spinner=False)
def predictor(path: str, weights_mtime: float):
    return load_predictor(path)


@st.cache_resource(max_entries=2, show_spinner="Reading the model…")
def uploaded_predictor(file_id: str, name: str, _data: bytes):
    """Keyed by the upload's id: hashing the bytes (up to the upload limit) on every rerun of the page costs time."""
    return load_predictor(_data, name)


@st.cache_resource(max_entries=4, show_spinner=False)
def training_images(dataset_id: str | None):
    """The run's dataset and what its images look like (for the drawing pad's comparison), or None if it is gone."""
    try:
        dataset = load_dataset(dataset_id) if dataset_id else None
    except LayerLabError:
        return None
    return dataset and (dataset, novelty_reference(dataset))


FROM_FILE = "A bundle or weights file"
source = st.segmented_control(
    "Model from",
    ["A run here", FROM_FILE],
    default="A run here",
    key="predict.source",
    help="A file: the bundle (.zip) from the Export page or a LayerLab .safetensors, for "
    "example of a model trained on another machine. No run needed.",
)
try:
    if source == FROM_FILE:
        upload = st.file_uploader(
            "Bundle (.zip) or weights (.safetensors)",
            type=["zip", "safetensors"],
            key="predict.model_file",
        )
        if upload is None:
            st.info(
                "Upload the bundle from the Export page (or `python -m engine export RUN --format bundle`), or a "
                "LayerLab .safetensors file.",
                icon=":material/upload_file:",
            )
            st.stop()
        model, meta = uploaded_predictor(upload.file_id, upload.name, upload.getvalue())
        run_id, dataset_id = Path(upload.name).stem, None
        model_source = (upload.name, upload.getvalue())
    else:
        run = trained_run("Run", "predict.run")
        run_id, dataset_id, weights = (
            run["id"],
            run["dataset_id"],
            Path(run["path"]) / "model.safetensors",
        )
        model, meta = predictor(str(weights), weights.stat().st_mtime)
        model_source = str(weights)
except LayerLabError as e:
    show_error(e)
    st.stop()


def draw_and_predict() -> None:
    """A drawing pad beside the model's prediction for the drawing."""
    c1, c2, c3 = st.columns(3)
    pen = c1.color_picker("Pen", "#FFFFFF", key="predict.pen")
    background = c2.color_picker(
        "Background",
        "#000000",
        key="predict.background",
        help="The built-in image sets are light shapes on a dark background.",
    )
    width = c3.slider("Pen width", 4, 48, 22, key="predict.pen_width")
    known = training_images(dataset_id)
    left, right = st.columns([1, 1.2])
    with left:
        png = drawing_pad("predict.draw", pen, background, width)
        if known is not None:
            st.caption("What the model learned from (training images):")
            image_grid(known[0], n=8, per_row=4)
    with right:
        if png is None:
            st.info(
                "Draw on the pad: the prediction appears when you lift the pen.",
                icon=":material/draw:",
            )
            return
        try:
            row = predict_images(model, meta, [("drawing.png", png)]).iloc[0]
        except LayerLabError as e:
            show_error(e)
            return
        size, channels = int(meta["input_shape"][-1]), int(meta["input_shape"][0])
        seen = decode_image(png, "drawing.png", size, grayscale=channels == 1)
        if known is not None and novelty(seen, known[1])[1]:
            st.warning(
                "This drawing is unlike the training images (farther from all of them than 99% of real "
                "images are), so the prediction means little. Draw it the way the samples below look: "
                "filled shapes, same colours, similar size.",
                icon=":material/warning:",
            )
        st.metric("Prediction", str(row["prediction"]))
        st.caption(f"{row['confidence']:.0%} confident")
        st.plotly_chart(
            probability_bars({c: float(row[f"p({c})"]) for c in meta["classes"]}),
            width="stretch",
            key="predict.draw.probabilities",
        )
        seen = seen.transpose(1, 2, 0)
        zoom = max(1, 128 // size)  # nearest-neighbour, so each input pixel shows as a square
        st.image(
            np.kron(seen, np.ones((zoom, zoom, 1), np.uint8)),
            caption=f"What the model sees ({size}×{size})",
        )


def show_predictions(uploads) -> None:
    """The uploaded rows or images through the model: a table, thumbnails for images, and the CSV download."""
    try:
        if images:
            files = [(f.name, f.getvalue()) for f in uploads]
            table = predict_images(model, meta, files)
        else:
            frame = read_table(uploads.getvalue(), uploads.name).frame
            table = predict_table(model, meta, frame)
    except LayerLabError as e:
        show_error(e)
        return
    if series:
        show_forecast(frame, table)
        return
    unreadable = int((table["error"] != "").sum()) if "error" in table else 0
    st.success(
        f"{len(table) - unreadable:,} prediction(s)."
        + (
            f" {unreadable:,} file(s) could not be read: see the error column."
            if unreadable
            else ""
        )
    )
    if images:
        cols = st.columns(6)
        for i, (f, (_, row)) in enumerate(zip(uploads[:12], table.iterrows(), strict=False)):
            if row.get("error"):
                cols[i % 6].caption(f"{f.name}: unreadable")
            else:
                cols[i % 6].image(
                    f.getvalue(), caption=f"{row['prediction']} ({row['confidence']:.0%})", width=96
                )
    percent = st.column_config.NumberColumn(format="percent")
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            c: percent for c in table.columns if c == "confidence" or str(c).startswith("p(")
        },
    )
    st.caption("Probabilities are shown as percentages; the CSV keeps them as numbers from 0 to 1.")
    download_csv(table, "Download predictions (CSV)", "predictions")
    if images:
        x, read, _ = image_tensor(meta, files)
        labels = [files[i][0] for i in read]
    else:
        x = torch.from_numpy(apply_preprocessing(frame, meta["preprocessing"]))
        labels = [f"row {i + 1}" for i in range(len(x))]
    known = training_images(dataset_id) if images else None
    try:
        dataset = known[0] if known else (load_dataset(dataset_id) if dataset_id else None)
    except LayerLabError:
        dataset = None
    explain_prediction(meta, model, x[: explain.MAX_EXPLAIN_ROWS], labels[: explain.MAX_EXPLAIN_ROWS], dataset,
                       model_source)  # fmt: skip


def download_csv(table, label: str, stem: str) -> None:
    """The table as a CSV a spreadsheet opens safely, named after the run."""
    st.download_button(
        label,
        csv_bytes(table),
        file_name=f"{stem}-{run_id}.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
        type="primary",
        key="predict.download",
    )


def show_forecast(history, table) -> None:
    """The forecast after the uploaded history: the last stretch of the history and the forecast on one chart,
    the table and its CSV."""
    prep = meta["preprocessing"]
    times, values = series_values(history, prep)
    keep = max(4 * int(prep["window"]), 2 * int(prep["horizon"]))
    when = times.iloc[-keep:] if times is not None else np.arange(len(values))[-keep:]
    target, time_name = prep["columns"][0], table.columns[1]
    st.success(
        f"The next {len(table)} step(s) of {target}, from the last {prep['window']} rows of the history."
    )
    st.plotly_chart(
        forecast_figure(
            [str(t) for t in when],
            values[-keep:, 0].tolist(),
            [{"time": [str(t) for t in table[time_name]], "value": table.iloc[:, 2].tolist()}],
            target,
            "History and forecast",
        ),
        width="stretch",
        key="predict.forecast",
    )
    st.dataframe(table, hide_index=True, width="stretch")
    download_csv(table, "Download the forecast (CSV)", "forecast")


def write_text() -> None:
    """A prompt and the sampling settings; Generate writes the continuation."""
    prep = meta["preprocessing"]
    st.caption(
        f"Trained on {meta['name']}: a language model over {len(meta['vocab']):,} "
        f"{'characters' if prep['tokens'] == 'char' else 'words and marks'}, reading {prep['context']} tokens back."
    )
    prompt = st.text_area(
        "Prompt", "", key="predict.prompt", help="The text to continue (empty: start anywhere)."
    )
    g1, g2, g3, g4 = st.columns(4)
    length = g1.number_input("Length (tokens)", 1, 2000, 200, key="predict.length")
    temperature = g2.number_input(
        "Temperature", 0.05, 3.0, 0.8, step=0.05, key="predict.temperature",
        help="Below 1: safer, more repetitive; above 1: more surprising, more mistakes.",
    )  # fmt: skip
    top_k = g3.number_input(
        "Top-k",
        0,
        1000,
        20,
        key="predict.top_k",
        help="Draw only from the k likeliest tokens (0: from all).",
    )
    seed = g4.number_input("Seed", 0, 2**31 - 1, 0, key="predict.seed")
    if st.button("Generate", type="primary", icon=":material/edit_note:", key="predict.generate"):
        try:
            with st.spinner("Writing…"):
                text = generate_text(
                    model, meta, prompt, length=int(length), temperature=float(temperature),
                    top_k=int(top_k) or None, seed=int(seed),
                )  # fmt: skip
        except LayerLabError as e:
            show_error(e)
            return
        st.session_state[f"predict.written.{run_id}"] = (prompt, text)
    if written := st.session_state.get(f"predict.written.{run_id}"):
        st.markdown("**Generated**")
        st.code(written[0] + written[1], language=None, wrap_lines=True)


def samples_page() -> None:
    """A VAE or a GAN's generator: how many samples and a seed; Generate makes them. Download them as files."""
    what = (
        "a GAN's generator: new samples are its output for noise drawn from N(0, 1)"
        if noise_size(model)
        else "a variational autoencoder: new samples are codes drawn from the prior N(0, 1), decoded"
    )
    st.caption(f"Trained on {meta['name']}: {what}.")
    g1, g2 = st.columns(2)
    count = g1.number_input("Samples", 1, 1000, 16, key="predict.count")
    seed = g2.number_input("Seed", 0, 2**31 - 1, 0, key="predict.sample_seed")
    if st.button("Generate", type="primary", icon=":material/auto_awesome:", key="predict.sample"):
        st.session_state[f"predict.samples.{run_id}"] = (int(count), int(seed))
    if chosen := st.session_state.get(f"predict.samples.{run_id}"):
        out = new_samples(model, meta, *chosen)
        caption = f"{chosen[0]} samples, seed {chosen[1]}."
        if len(meta["input_shape"]) == 3:
            show_samples(images_uint8(out).tolist(), True, caption)
            st.download_button("Download the samples (PNG files in a zip)", zip_bytes(sample_files(out, meta)),
                               file_name="samples.zip", mime="application/zip", on_click="ignore",
                               icon=":material/download:")  # fmt: skip
        else:
            rows = decoded_rows(out.flatten(1), meta.get("preprocessing") or {})
            show_samples(rows.to_dict("records"), False, caption)
            download_csv(rows, "Download the samples (CSV)", "samples")


images = (meta.get("preprocessing") or {}).get("kind") == "image"
series = (meta.get("preprocessing") or {}).get("kind") == "series"
if latent_layer(model) is not None or noise_size(model):
    samples_page()
elif images:
    st.caption(
        f"Trained on {meta['name']}: images, resized to {meta['input_shape'][-1]}×{meta['input_shape'][-1]} "
        f"{'grayscale' if meta['input_shape'][0] == 1 else 'RGB'}; classes {', '.join(meta['classes'])}."
    )
    upload_tab, draw_tab = st.tabs(["Upload images", "Draw one"])
    with upload_tab:
        uploads = st.file_uploader(
            "Images",
            type=[e.lstrip(".") for e in sorted(IMAGE_EXTENSIONS)],
            accept_multiple_files=True,
            key="predict.images",
        )
        if uploads:
            show_predictions(uploads)
    with draw_tab:
        draw_and_predict()
elif meta.get("task") == "language_model":
    write_text()
elif series:
    prep = meta["preprocessing"]
    needs = ([prep["time_column"]] if prep.get("time_column") else []) + prep["columns"]
    st.caption(
        f"Trained on {meta['name']}: a forecaster of {prep['columns'][0]}. Upload the history, a table with the "
        f"column(s) {', '.join(needs)}{'' if prep.get('time_column') else ' in time order'}: the model reads its "
        f"last {prep['window']} rows and forecasts the next {prep['horizon']} steps."
    )
    uploads = st.file_uploader(
        "History", type=[e.lstrip(".") for e in sorted(EXTENSIONS)] + ["gz"], key="predict.history"
    )
    if uploads:
        show_predictions(uploads)
else:
    prep = meta.get("preprocessing") or {}
    columns = [c["name"] for c in prep.get("columns") or []] + (prep.get("text") or {}).get(
        "columns", []
    )
    st.caption(
        f"Trained on {meta['name']}. The table needs the column(s): {', '.join(columns)} (any order; other "
        "columns are kept beside the predictions)."
    )
    uploads = st.file_uploader(
        "Rows to predict",
        type=[e.lstrip(".") for e in sorted(EXTENSIONS)] + ["gz"],
        key="predict.table",
    )
    if uploads:
        show_predictions(uploads)
