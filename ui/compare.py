"""Compare runs: their curves overlaid, their settings and results side by side with the differences marked."""

from pathlib import Path

import pandas as pd
import streamlit as st

from engine.runs import read_events
from ui.charts import curves
from ui.common import fmt_seconds, origin

DIFFERS = "background-color: #FEF3C7; font-weight: 600"


def _label(run: dict) -> str:
    return run["name"] if run["name"] == run["id"] else f"{run['name']} ({run['id']})"


def _table(runs: list[dict]) -> pd.DataFrame:
    """One row per setting or result, one column per run; values as text so mixed types line up."""
    keys = sorted({k for r in runs for k in r["config"]})
    rows: dict[str, list] = {
        "dataset": [r["dataset"] for r in runs],
        "layers": [r["layers"] for r in runs],
        "branched from": [origin(r.get("parent")) for r in runs],
    }
    rows.update({k: [r["config"].get(k) for r in runs] for k in keys})
    metrics = sorted({k for r in runs for k in (r.get("metrics") or {})})
    rows["status"] = [r["state"] for r in runs]
    rows["best epoch"] = [(r.get("best") or {}).get("epoch") for r in runs]
    rows.update({k: [(r.get("metrics") or {}).get(k) for r in runs] for k in metrics})
    rows["samples/s"] = [
        round(r["samples_per_second"]) if r.get("samples_per_second") else None for r in runs
    ]
    rows["duration"] = [
        fmt_seconds(r["finished"] - r["started"]) if r.get("finished") and r.get("started") else ""
        for r in runs
    ]
    text = {
        k: ["" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in vs]
        for k, vs in rows.items()
    }
    return pd.DataFrame.from_dict(text, orient="index", columns=[_label(r) for r in runs])


def compare(runs: list[dict]) -> None:
    """Pick runs from the list; draw what they share and where they differ."""
    by_id = {r["id"]: r for r in runs}
    picked = st.multiselect(
        "Compare runs",
        list(by_id),
        format_func=lambda i: _label(by_id[i]),
        key="train.compare",
        placeholder="Pick two or more runs",
        help="Their curves on one chart, their settings and results side by side.",
    )
    if len(picked) < 2:
        st.caption("Pick two or more runs to overlay their curves and see which settings differ.")
        return
    chosen = [by_id[i] for i in picked]
    loss, metric, metric_name = {}, {}, None
    for r in chosen:
        epochs = [e for e in read_events(Path(r["path"]))[0] if e["type"] == "epoch_end"]
        xs = [e["epoch"] for e in epochs]
        loss[_label(r)] = (xs, [e["metrics"]["val/loss"] for e in epochs])
        name = next(
            (k for k in ("val/accuracy", "val/mae") if epochs and k in epochs[0]["metrics"]), None
        )
        if name:
            metric_name = metric_name or name
            if name == metric_name:
                metric[_label(r)] = (xs, [e["metrics"][name] for e in epochs])
    c1, c2 = st.columns(2)
    c1.plotly_chart(
        curves(loss, "Validation loss per epoch", "epoch", "loss"),
        width="stretch",
        key="compare.loss",
    )
    if metric:
        title = "Validation accuracy" if metric_name == "val/accuracy" else "Validation MAE"
        c2.plotly_chart(
            curves(
                metric,
                f"{title} per epoch",
                "epoch",
                metric_name.split("/")[1],
                percent=metric_name == "val/accuracy",
            ),
            width="stretch",
            key="compare.metric",
        )
    table = _table(chosen)
    differs = table.nunique(axis=1) > 1
    table = pd.concat([table[differs], table[~differs]])  # what differs first
    if st.toggle("Only what differs", key="train.compare.diff"):
        table = table[differs[table.index]]
    st.caption(
        f"{int(differs.sum())} of {len(differs)} settings and results differ (highlighted, listed first)."
    )
    st.table(
        table.style.apply(lambda row: [DIFFERS if differs[row.name] else ""] * len(row), axis=1)
    )
