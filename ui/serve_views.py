"""The Export page's deployment parts: a local prediction service with its curl example and a request tried from
the page, quantized variants with what they trade, and the model card."""

import os
import re
from pathlib import Path

import pandas as pd
import streamlit as st

from engine import jobs, local_service, quantize
from engine.bundle import run_model_card
from engine.errors import LayerLabError
from engine.predict import noise_size, serving_info
from engine.service import curl_example, example_request
from ui.common import show_error
from ui.progress import job_view

ANSWER = "serve.answer"
QUANTIZE = "quantize.job"


def service_panel(run_dir: Path, model, meta: dict) -> None:
    """The curl example, and a local service for this run: start it, send the example, stop it."""
    info, noise = serving_info(model, meta), noise_size(model)
    service = local_service.running(run_dir)
    url = service["url"] if service else "http://127.0.0.1:8000"
    st.markdown(
        f"**A prediction service**: `python -m engine serve {run_dir}` here, or `python serve.py` from the bundle "
        "(its Dockerfile builds the same service as an image). `POST /predict` answers what the Predict page "
        "shows; `GET /metadata` lists the inputs and an example."
    )
    st.code(curl_example(url, info, noise), language="bash")
    if service is None:
        if st.button("Start a local service", icon=":material/play_arrow:", key="serve.start"):
            with st.spinner("Starting the service…"):
                try:
                    local_service.start(
                        run_dir, stop_with=os.getpid()
                    )  # it stops when the app stops
                except LayerLabError as e:
                    show_error(e)
                    return
            st.rerun()
        return
    c1, c2, c3 = st.columns([2.2, 1.6, 3], vertical_alignment="center")
    if c1.button(
        "Send the example request", icon=":material/send:", key="serve.try", type="primary"
    ):
        path, body = example_request(info, noise)
        try:
            status, answer = local_service.request(url, path, body)
        except OSError as e:
            status, answer = 0, {"error": f"the service did not answer ({e})"}
        st.session_state[ANSWER] = {
            "run": str(run_dir),
            "status": status,
            "path": path,
            "answer": answer,
        }
    if c2.button("Stop the service", icon=":material/stop:", key="serve.stop"):
        local_service.stop(run_dir)
        st.session_state.pop(ANSWER, None)
        st.rerun()
    c3.caption(f"Serving at {url} (process {service['pid']}); it stops with the app.")
    shown = st.session_state.get(ANSWER)
    if shown and shown["run"] == str(run_dir):
        st.caption(f"`POST {shown['path']}` answered HTTP {shown['status']}:")
        st.json(shown["answer"])


def quantize_panel(run_dir: Path) -> None:
    """Quantized variants of the run's model, compared with it on this machine, with their downloads."""
    st.markdown(
        "**Smaller and faster**: int8 variants, each timed here and scored on the test split beside the original."
    )
    c1, c2 = st.columns([3, 1.2])
    formats = c1.multiselect("Variants", list(quantize.FORMATS), default=list(quantize.FORMATS), key="quantize.formats",
                             help="\n".join(f"- **{k}**: {v}" for k, v in quantize.FORMATS.items()))  # fmt: skip
    max_drop = c2.number_input("Flag a metric worse by over (%)", 0.0, 100.0, quantize.DEFAULT_MAX_DROP, 0.5,
                               key="quantize.max_drop")  # fmt: skip

    def start():  # on_click: one job per click, even when a click lands while the page reruns
        st.session_state[QUANTIZE] = str(
            jobs.start("quantize", {"run_dir": str(run_dir), "formats": formats})
        )
        st.session_state[QUANTIZE + ".run"] = str(run_dir)

    st.button("Quantize and compare", icon=":material/compress:", key="quantize.go", disabled=not formats,
              on_click=start)  # fmt: skip
    if st.session_state.get(QUANTIZE + ".run") != str(run_dir):
        return
    result = job_view(QUANTIZE, "Quantizing")
    if result is None:
        return
    rows, metric = result["rows"], result["metric"]
    table = pd.DataFrame([{
        "variant": r["name"],
        "file (KiB)": r["bytes"] / 1024 if "bytes" in r else None,
        "× smaller than its float32 file": r["float_bytes"] / r["bytes"] if "bytes" in r else None,
        "ms/sample at batch 1": r.get("ms_b1"),
        "ms/sample at batch 32": r.get("ms_b32"),
        f"test {metric}": r.get("value"),
        "change (%)": r.get("change_pct"),
        "flag": _flags(r, result["higher_is_better"], max_drop),
    } for r in rows])  # fmt: skip
    numbers = {c: st.column_config.NumberColumn(format="%.4g") for c in table.columns[1:-1]}
    st.dataframe(
        table, hide_index=True, width="stretch", key="quantize.table", column_config=numbers
    )
    worse = "lower" if result["higher_is_better"] else "higher"
    st.caption(f"Scored on {result['test_rows']:,} test rows; timed on this machine's CPU. Flagged: a {metric} "
               f"{worse} than the original's by over {max_drop:g}%.")  # fmt: skip
    folder = Path(st.session_state[QUANTIZE])
    kept = [r for r in rows if r.get("file") and (folder / r["file"]).exists()]
    for column, r in zip(st.columns(max(len(kept), 1)), kept, strict=False):
        column.download_button(f"Download {r['name']}", (folder / r["file"]).read_bytes(), file_name=r["file"],
                               mime="application/octet-stream", on_click="ignore", icon=":material/download:",
                               key=f"quantize.dl.{r['format']}")  # fmt: skip


def _flags(row: dict, higher_is_better: bool, max_drop: float) -> str:
    """What to know about a variant: why it could not be made, a metric worse than allowed, a file no smaller."""
    if "error" in row:
        return row["error"]
    flags = []
    if quantize.flagged(row, higher_is_better, max_drop):
        flags.append("worse than allowed")
    if row["format"] in quantize.FORMATS and row["bytes"] >= row["float_bytes"]:
        flags.append("not smaller (few weights it can quantize)")
    return ", ".join(flags)


@st.cache_data(max_entries=8, show_spinner="Writing the model card (scoring the test split)…")
def _card(run_dir: str, weights_mtime: float) -> str:
    return run_model_card(Path(run_dir))


def model_card_panel(run_dir: Path) -> None:
    """The bundle's MODEL_CARD.md, written when asked for (it scores the test split)."""
    if not st.toggle("Preview the model card (MODEL_CARD.md, in the bundle)", key="export.card"):
        return
    with st.container(border=True):
        try:
            card = _card(str(run_dir), (run_dir / "model.safetensors").stat().st_mtime)
            st.markdown(
                re.sub(r"^(#+) ", r"###\1 ", card, flags=re.MULTILINE)
            )  # its headings, smaller in here
        except LayerLabError as e:
            show_error(e)
