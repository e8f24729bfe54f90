"""Evaluate page views: metric cards, the confusion matrix, ROC and PR curves, residuals, the worst cases."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from engine.data.prepare import kept_rows
from engine.data.store import Dataset
from engine.portable import with_rows
from engine.tasks import TASKS
from ui.charts import COLORS, curves, forecast_figure, layout, short_labels


def wide_confusion(report: dict) -> bool:
    """Many or long class names: the matrix gets the page's full width."""
    return len(report["classes"]) > 5 or max(len(str(c)) for c in report["classes"]) > 12


def confusion_figure(report: dict, normalized: bool) -> go.Figure:
    cm = np.array(report["confusion"], dtype=float)
    z = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalized else cm
    text = [[f"{v:.0%}" if normalized else f"{int(v)}" for v in row] for row in z]
    classes = [str(c) for c in report["classes"]]
    labels = short_labels(classes)
    names = [[(t, p) for p in classes] for t in classes]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=labels,
            y=labels,
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            showscale=False,
            customdata=names,
            textfont=dict(size=13 if len(classes) <= 12 else 10),
            hovertemplate="true %{customdata[0]}, predicted %{customdata[1]}: %{text}"
            "<extra></extra>",
        )
    )
    fig = layout(
        fig,
        "Confusion matrix" + (" (share of each true class)" if normalized else " (rows)"),
        height=max(320, 44 * len(classes) + 160),
        xaxis_title="predicted",
        yaxis_title="true",
    )
    fig.update_yaxes(autorange="reversed", type="category", automargin=True)
    fig.update_xaxes(type="category", automargin=True, tickangle=-35 if len(classes) > 4 else 0)
    return fig


def roc_pr_figures(report: dict) -> tuple[go.Figure, go.Figure]:
    roc = {f"{c['class']} (AUC {c['roc_auc']:.3f})": (c["fpr"], c["tpr"]) for c in report["curves"]}
    pr = {
        f"{c['class']} (AP {c['average_precision']:.3f})": (c["recall"], c["precision"])
        for c in report["curves"]
    }
    one_vs_rest = "" if len(report["classes"]) == 2 else ", one class vs the rest"
    roc_fig = curves(roc, f"ROC curve{one_vs_rest}", "false-positive rate", "true-positive rate")
    roc_fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(color="#CBD5E1", dash="dot")
        )
    )
    return roc_fig, curves(pr, f"Precision-recall{one_vs_rest}", "recall", "precision")


def class_table(report: dict) -> pd.DataFrame:
    rows = [dict(c) for c in report["per_class"]]
    support = sum(c["support"] for c in report["per_class"])
    rows += [
        {"class": f"{name} average", **report["averages"][name], "support": support}
        for name in ("macro", "weighted")
    ]
    return pd.DataFrame(rows).round(4)


def regression_figures(report: dict, target: str) -> tuple[go.Figure, go.Figure]:
    actual, predicted = report["actual"], report["predicted"]
    lo, hi = min(actual + predicted), max(actual + predicted)
    scatter = go.Figure(
        [
            go.Scatter(
                x=actual,
                y=predicted,
                mode="markers",
                name="rows",
                marker=dict(color=COLORS[0], size=5, opacity=0.6),
            ),
            go.Scatter(
                x=[lo, hi],
                y=[lo, hi],
                mode="lines",
                name="perfect",
                line=dict(color="#94A3B8", dash="dot"),
            ),
        ]
    )
    scatter = layout(
        scatter,
        "Predicted against actual",
        xaxis_title=f"actual {target}",
        yaxis_title=f"predicted {target}",
    )
    hist = layout(
        go.Figure(go.Histogram(x=report["residuals"], nbinsx=40, marker_color=COLORS[1])),
        "Residuals (predicted − actual)",
        xaxis_title=target,
        yaxis_title="rows",
    )
    return scatter, hist


def worst_rows(report: dict, dataset: Dataset, split: str) -> None:
    """The misclassified (most confident first) or worst-predicted rows, with their inputs."""
    rows = (
        report["misclassified"]
        if TASKS[report["task"]].predictions == "classes"
        else report["worst"]
    )
    if not rows:
        st.success(
            "No misclassified rows in this split."
            if TASKS[report["task"]].predictions == "classes"
            else "No rows to list."
        )
        return
    x = dataset.split(split)[0]
    if x.dim() == 4:  # images: thumbnails with what the model said
        cols = st.columns(8)
        for i, r in enumerate(rows[:24]):
            img = x[r["row"]].float() / 255 if x.dtype == torch.uint8 else x[r["row"]]
            img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
            with cols[i % 8]:
                st.image(
                    img.clamp(0, 1).numpy(),
                    width=64,
                    caption=f"{r['true']} → {r['predicted']} ({r['confidence']:.0%})",
                )
        return
    frame = pd.DataFrame(rows).round(4)
    own = kept_rows(dataset, split, frame["row"])
    if own is not None:  # the user's own columns, keys first, as read from their file
        target = ((dataset.meta.get("preprocessing") or {}).get("target") or {}).get("name")
        table = with_rows(
            frame,
            own.drop(columns=[target], errors="ignore"),
            dataset.meta.get("preprocessing") or {},
        )
        st.caption(f"row: its place in the {split} split; the other columns as in your data.")
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={"confidence": st.column_config.NumberColumn(format="percent")},
        )
        return
    names = dataset.meta.get("feature_names") or []
    if x.dim() == 2 and x.is_floating_point() and len(names) == x.shape[1] and len(names) <= 30:
        inputs = pd.DataFrame(x[frame["row"].to_numpy()].numpy(), columns=names).round(3)
        frame = pd.concat([frame, inputs.add_prefix("input: ")], axis=1)
        st.caption(
            f"row: its place in the {split} split; inputs as the model sees them (after scaling and "
            "encoding)."
        )
    st.dataframe(frame, hide_index=True, width="stretch")


BASELINES = {"naive": "Naive (last value)", "seasonal_naive": "Seasonal naive (last season)"}
ERRORS = {"mae": "MAE", "rmse": "RMSE", "mape": "MAPE %", "smape": "sMAPE %"}


def forecast_view(report: dict, target: str) -> None:
    """A forecaster's errors in the series' units beside the naive forecasts' (a ratio below 1: the model is
    better), the error by step ahead, and its forecasts drawn over the actual series."""
    summary, baselines = report["summary"], report["baselines"]
    cards = st.columns(4)
    for card, (key, title) in zip(cards, ERRORS.items(), strict=True):
        ratio = report["ratios"].get("naive", {}).get(key)
        value = summary[key]
        card.metric(
            title,
            "–" if value is None else f"{value:.4g}",
            delta=None if ratio is None else f"{ratio:.2f}× the naive forecast's",
            delta_color="normal" if ratio is None or ratio < 1 else "inverse",
            delta_arrow="off",
        )
    rows = [{"forecast": "This model", **{ERRORS[k]: summary[k] for k in ERRORS}}]
    for name, errors in baselines.items():
        rows.append({"forecast": BASELINES[name], **{ERRORS[k]: errors[k] for k in ERRORS}})
        rows.append(
            {
                "forecast": f"model ÷ {BASELINES[name].split(' (')[0].lower()}",
                **{ERRORS[k]: report["ratios"][name].get(k) for k in ERRORS},
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(
        f"Errors in {target}'s units over all {report['n']:,} forecasts of {report['horizon']} steps. A ratio below 1 "
        "means the model beats that baseline; a forecaster that cannot beat the naive forecast has learned nothing "
        "useful yet."
    )
    left, right = st.columns([2.2, 1])
    if report["plot"]:
        plot = report["plot"]
        left.plotly_chart(
            forecast_figure(
                plot["time"],
                plot["actual"],
                plot["forecasts"],
                target,
                "Forecasts over the actual series",
            ),
            width="stretch",
            key="evaluate.forecast",
        )
    right.plotly_chart(
        layout(
            go.Figure(
                go.Bar(
                    x=list(range(1, len(report["by_step"]) + 1)),
                    y=report["by_step"],
                    marker_color=COLORS[0],
                )
            ),
            "Error by step ahead (MAE)",
            xaxis_title="steps ahead",
            yaxis_title=target,
        ),
        width="stretch",
        key="evaluate.by_step",
    )


def text_view(report: dict) -> None:
    """A language model on the split: bits per token and perplexity beside the unigram baseline's, next-token
    accuracy, and what it writes after the split's first window."""
    summary = report["summary"]
    cards = st.columns(4)
    cards[0].metric(
        "Bits per token",
        f"{summary['bits_per_token']:.3f}",
        delta=f"{summary['bits_per_token'] / summary['unigram_bits_per_token']:.2f}× the unigram baseline's",
        delta_arrow="off",
        help="Cross-entropy of the next token, in bits: how surprised the model is, on average. Lower is better.",
    )
    cards[1].metric("Perplexity", f"{summary['perplexity']:.3g}", help="2 to the bits per token: as unsure as "
                    "choosing among this many tokens at random.")  # fmt: skip
    cards[2].metric("Next-token accuracy", f"{summary['accuracy']:.1%}")
    cards[3].metric(
        "Unigram baseline",
        f"{summary['unigram_bits_per_token']:.3f} bits",
        help="Each token guessed from how often it appears in the training text alone, whatever came before.",
    )
    st.caption(
        f"Over {report['tokens']:,} next-token predictions. Written after the split's first window "
        f"(“…{report['prompt'][-60:]}”), temperature 0.8, top-k 20:"
    )
    st.code(report["sample"], language=None, wrap_lines=True)
