"""Predict: new rows or images through a trained model, with the preprocessing it was trained with."""

from pathlib import Path

import streamlit as st

from engine.data.readers import EXTENSIONS, read_table
from engine.errors import LayerLabError
from engine.portable import IMAGE_EXTENSIONS, csv_bytes
from engine.predict import load_predictor, predict_images, predict_table
from ui.common import page, show_error, trained_run

page("Predict", "Upload new rows or images: the model prepares them exactly as in training and predicts, with "
                "each class's probability. Download the predictions as CSV.")


@st.cache_resource(max_entries=4, show_spinner=False)
def predictor(path: str, weights_mtime: float):
    return load_predictor(path)


run = trained_run("Model", "predict.run")
run_id, weights = run["id"], Path(run["path"]) / "model.safetensors"
try:
    model, meta = predictor(str(weights), weights.stat().st_mtime)
except LayerLabError as e:
    show_error(e)
    st.stop()
images = (meta.get("preprocessing") or {}).get("kind") == "image"
if images:
    st.caption(f"Trained on {meta['name']}: images, resized to {meta['input_shape'][-1]}×{meta['input_shape'][-1]} "
               f"{'grayscale' if meta['input_shape'][0] == 1 else 'RGB'}; classes {', '.join(meta['classes'])}.")
    uploads = st.file_uploader("Images", type=[e.lstrip(".") for e in sorted(IMAGE_EXTENSIONS)],
                               accept_multiple_files=True, key="predict.images")
else:
    columns = [c["name"] for c in (meta.get("preprocessing") or {}).get("columns", [])] or \
        (meta.get("preprocessing") or {}).get("text", {}).get("columns", [])
    st.caption(f"Trained on {meta['name']}. The table needs the column(s): {', '.join(columns)} (any order; other "
               "columns are kept beside the predictions).")
    uploads = st.file_uploader("Rows to predict", type=[e.lstrip(".") for e in sorted(EXTENSIONS)],
                               key="predict.table")
if not uploads:
    st.stop()
try:
    if images:
        table = predict_images(model, meta, [(f.name, f.getvalue()) for f in uploads])
    else:
        table = predict_table(model, meta, read_table(uploads.getvalue(), uploads.name).frame)
except LayerLabError as e:
    show_error(e)
    st.stop()
st.success(f"{len(table):,} prediction(s).")
if images:
    cols = st.columns(6)
    for i, (f, (_, row)) in enumerate(zip(uploads[:12], table.iterrows(), strict=False)):
        cols[i % 6].image(f.getvalue(), caption=f"{row['prediction']} ({row['confidence']:.0%})", width=96)
st.dataframe(table, hide_index=True, width="stretch")
st.download_button("Download predictions (CSV)", csv_bytes(table), file_name=f"predictions-{run_id}.csv",
                   mime="text/csv", on_click="ignore", icon=":material/download:", type="primary",
                   key="predict.download")
