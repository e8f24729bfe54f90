"""Train page, under a classifier's run: the training-dynamics map of its training rows (easy, ambiguous, hard), the
rows that look mislabelled (with a way to drop them and train again), and pinned validation rows' timelines."""

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from engine.data.folds import run_dataset
from engine.data.prepare import kept_rows
from engine.errors import LayerLabError
from engine.runs import create_run
from engine.scheduler import enqueue
from engine.train import dynamics
from engine.workspace import read_json
from ui import state
from ui.charts import COLORS, layout
from ui.common import show_error

REGION_COLOURS = {dynamics.EASY: COLORS[2], dynamics.AMBIGUOUS: "#EAB308", dynamics.HARD: COLORS[1]}


def data_view(run_dir: Path) -> None:
    if not (run_dir / dynamics.FILE).exists():
        return
    more = st.expander("Hard data, likely mislabelled rows and pinned samples", icon=":material/scatter_plot:",
                       key=f"dyn.{run_dir.name}", on_change="rerun")  # fmt: skip
    if not more.open:
        return
    with more:
        try:
            dataset = run_dataset(read_json(run_dir / "train.json", {}))
        except (KeyError, LayerLabError):
            st.info("This run's dataset is no longer in the workspace.")
            return
        tabs = st.tabs(["Training-dynamics map", "Pinned samples"], key=f"dyn.tabs.{run_dir.name}")
        with tabs[0]:
            _map(run_dir, dataset)
        with tabs[1]:
            _pins(run_dir, dataset)


def _map(run_dir: Path, dataset) -> None:
    classes = dataset.meta["classes"]
    found = dynamics.cartography(run_dir, dataset.split("train")[1], classes)
    if found is None:
        st.caption("The map appears after the first epoch.")
        return
    n = len(found["rows"])
    fig = go.Figure()
    region = np.array(found["region"])
    for name, colour in REGION_COLOURS.items():
        keep = np.flatnonzero(region == name)
        fig.add_trace(go.Scattergl(
            x=np.array(found["variability"])[keep], y=np.array(found["confidence"])[keep], mode="markers",
            name=f"{name} ({len(keep):,})", marker=dict(size=5, color=colour, opacity=0.6),
            customdata=np.array(found["rows"])[keep], hovertemplate="row %{customdata}<extra></extra>"))  # fmt: skip
    fig.update_xaxes(title="variability (spread of the label's probability over the epochs)")
    fig.update_yaxes(title="confidence (mean probability of its label)", range=[0, 1])
    st.plotly_chart(layout(fig, f"Training rows over {found['epochs']} epoch(s)", height=380), width="stretch",
                    key=f"dyn.map.{run_dir.name}")  # fmt: skip
    st.caption(
        f"{n:,} training rows. **Easy** (top left): learned early and kept. **Ambiguous** (right): the model keeps "
        "changing its mind; these rows teach it most. **Hard** (bottom left): it never believes their label; "
        "often mislabelled rows, or rare cases. Trust the map more after several epochs."
    )
    suspects = found["suspects"]
    if not suspects:
        st.success("No training row looks mislabelled: the model came to believe every label.")
        return
    share = f"{dynamics.MISLABELLED:.0%}"
    st.markdown(f"**{len(suspects)} row(s) look mislabelled**: confidence in their label under {share}, and right "
                f"in at most {share} of the epochs.")  # fmt: skip
    table = pd.DataFrame(suspects).rename(columns={"row": "training row", "label": "label given"})
    own = kept_rows(dataset, "train", [s["row"] for s in suspects])
    if own is not None:
        table = pd.concat([table, own.add_prefix("your column: ")], axis=1)
    picked = st.dataframe(table.round(3), hide_index=True, width="stretch", on_select="rerun",
                          selection_mode="single-row", key=f"dyn.suspects.{run_dir.name}")  # fmt: skip
    chosen = picked.selection.rows if picked is not None else []
    if chosen:
        _show_row(dataset, suspects[chosen[0]]["row"])
    else:
        st.caption("Select a row to see it.")
    if st.button(f"Drop these {len(suspects)} rows and train again", icon=":material/call_split:",
                 key=f"dyn.drop.{run_dir.name}",
                 help="A new run of the same model and settings, on the training rows without these (validation "
                 "and test unchanged), so the two runs compare fairly."):  # fmt: skip
        _branch_without(run_dir, [s["row"] for s in suspects])


def _show_row(dataset, row: int) -> None:
    x = dataset.split("train")[0][row]
    if x.dim() == 3:
        img = x.float() / 255 if x.dtype == torch.uint8 else x
        st.image((img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).clamp(0, 1).numpy(), width=128,
                 caption=f"training row {row}")  # fmt: skip
        return
    own = kept_rows(dataset, "train", [row])
    if own is not None:
        st.dataframe(own, hide_index=True, width="stretch")


def _branch_without(run_dir: Path, rows: list[int]) -> None:
    train = read_json(run_dir / "train.json", {})
    extra = {k: train[k] for k in ("fold",) if train.get(k)}
    dropped = sorted(set(train.get("drop_rows") or []) | set(rows))
    try:
        new = create_run(read_json(run_dir / "spec.json"), train["config"], Path(train["dataset_dir"]),
                         parent={"run": run_dir.name, "name": train.get("name", run_dir.name),
                                 "checkpoint": f"{len(dropped)} training rows dropped"},
                         extra={**extra, "drop_rows": dropped})  # fmt: skip
        enqueue(new)
        state.set_run(new.name)
        st.rerun(scope="app")
    except LayerLabError as e:
        show_error(e)


def _pins(run_dir: Path, dataset) -> None:
    x_val, y_val = dataset.split("val")
    n = min(len(y_val), dynamics.MAX_VAL)
    classes = [str(c) for c in dataset.meta["classes"]]
    labels = y_val.long().reshape(-1).tolist()
    pins = st.multiselect(
        f"Pin validation rows (up to {dynamics.PINS})", range(n), max_selections=dynamics.PINS,
        default=list(range(min(5, n))), key=f"dyn.pins.{run_dir.name}",
        format_func=lambda r: f"row {r} ({classes[labels[r]]})",
        help="Watch these rows epoch by epoch: which class the model gave each, and how sure it was.",
    )  # fmt: skip
    lines = dynamics.timeline(run_dir, pins, y_val, classes)
    if not lines:
        return
    z = [
        [p if r else -p for p, r in zip(line["probability"], line["right"], strict=True)]
        for line in lines
    ]
    text = [[f"epoch {e}: {c} ({p:.0%})" for e, c, p in zip(line["epochs"], line["predicted"], line["probability"],
                                                             strict=True)] for line in lines]  # fmt: skip
    names = [f"row {line['row']} ({line['label']})" for line in lines]
    scale = [[0, COLORS[1]], [0.5, "#F8FAFC"], [1, COLORS[2]]]
    fig = go.Figure(go.Heatmap(z=z, x=lines[0]["epochs"], y=names, zmin=-1, zmax=1, text=text, hoverinfo="text",
                               colorscale=scale, showscale=False))  # fmt: skip
    fig.update_xaxes(title="epoch", dtick=1)
    title = "Pinned rows: green when right, red when wrong (the deeper, the surer)"
    st.plotly_chart(layout(fig, title, height=120 + 28 * len(lines)), width="stretch",
                    key=f"dyn.pinned.{run_dir.name}")  # fmt: skip
    said = []
    for line in lines:
        learned = f"learned at epoch {line['learned']}" if line["learned"] else "not learned yet"
        forgot = (
            f"; forgotten at epoch {', '.join(map(str, line['forgotten']))}"
            if line["forgotten"]
            else ""
        )
        said.append(f"- row {line['row']} ({line['label']}): {learned}{forgot}; last said "
                    f"{line['predicted'][-1]} ({line['probability'][-1]:.0%})")  # fmt: skip
    st.markdown("\n".join(said))
