"""Inside a run: the decision boundary on 2-D data, per-layer gradient norms, histograms and dead ReLUs."""

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from engine.data.store import load_dataset
from engine.train import boundary
from engine.workspace import read_json
from ui.charts import COLORS, curves, layout

POINTS = 400  # training points drawn over the boundary


@st.cache_data(max_entries=8, show_spinner=False)
def _points(dataset_dir: str) -> tuple[np.ndarray, np.ndarray, list[dict], list | None]:
    dataset = load_dataset(dataset_dir)
    x, y = dataset.split("train")
    keep = np.random.default_rng(0).permutation(len(x))[:POINTS]
    return (
        x.numpy()[keep],
        y.numpy()[keep],
        boundary.axes(dataset.meta),
        dataset.meta.get("classes"),
    )


def boundary_figure(
    grid: dict, x: np.ndarray, y: np.ndarray, axes: list[dict], classes: list | None
) -> go.Figure:
    """The heatmap in the columns' own units, the training points over it."""
    ax, ay = axes
    gx = np.array(grid["x"]) * ax["scale"] + ax["shift"]
    gy = np.array(grid["y"]) * ay["scale"] + ay["shift"]
    px, py = x[:, 0] * ax["scale"] + ax["shift"], x[:, 1] * ay["scale"] + ay["shift"]
    fig = go.Figure()
    if grid["kind"] == "classes":
        z = np.array(grid["z"], dtype=float)
        n = max(len(classes or []), int(z.max()) + 1, 2)
        scale = [[i / (n - 1) if n > 1 else 0, COLORS[i % len(COLORS)]] for i in range(n)]
        fig.add_trace(
            go.Heatmap(
                x=gx,
                y=gy,
                z=z,
                zmin=0,
                zmax=n - 1,
                colorscale=scale,
                showscale=False,
                opacity=0.35,
                customdata=np.array(grid["confidence"]),
                hoverinfo="skip",
            )
        )
        for k in range(n):
            mask = y == k
            if mask.any():
                fig.add_trace(
                    go.Scatter(
                        x=px[mask],
                        y=py[mask],
                        mode="markers",
                        name=str((classes or [k] * n)[k]),
                        marker=dict(
                            color=COLORS[k % len(COLORS)],
                            size=6,
                            line=dict(color="white", width=0.8),
                        ),
                    )
                )
    else:
        z = np.array(grid["z"])
        lo, hi = float(z.min()), float(z.max())
        fig.add_trace(
            go.Heatmap(
                x=gx,
                y=gy,
                z=z,
                colorscale="Viridis",
                opacity=0.6,
                zmin=lo,
                zmax=hi,
                colorbar=dict(title="prediction", thickness=12),
            )
        )
        fig.add_trace(
            go.Scatter(
                x=px,
                y=py,
                mode="markers",
                name="training rows",
                showlegend=False,
                marker=dict(
                    color=y,
                    colorscale="Viridis",
                    cmin=lo,
                    cmax=hi,
                    size=6,
                    line=dict(color="white", width=0.8),
                ),
            )
        )
    fig = layout(
        fig,
        f"{'Decision boundary' if grid['kind'] == 'classes' else 'Prediction surface'} "
        f"(epoch {grid['epoch']})",
        xaxis_title=ax["name"],
        yaxis_title=ay["name"],
    )
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    fig.update_xaxes(range=[gx[0], gx[-1]])
    fig.update_yaxes(range=[gy[0], gy[-1]])
    return fig


def boundary_chart(run_dir: Path) -> bool:
    """The live decision boundary, for runs on 2-D data; False when the run has none."""
    grid = read_json(run_dir / boundary.BOUNDARY, None)
    train = read_json(run_dir / "train.json", {})
    if not grid or not train.get("dataset_dir"):
        return False
    try:
        x, y, axes, classes = _points(train["dataset_dir"])
    except Exception:  # noqa: BLE001 - the dataset was deleted: the chart is skipped, the rest of the run shows
        return False
    st.plotly_chart(
        boundary_figure(grid, x, y, axes, classes), width="stretch", key=f"boundary.{run_dir.name}"
    )
    return True


def gradient_chart(looks: list[dict], key: str) -> None:
    """Each layer's gradient norm over the steps (log scale): vanishing and exploding gradients show here."""
    series: dict[str, tuple[list, list]] = {}
    for look in looks:
        for layer in look["layers"]:
            if layer.get("grad_norm") is not None:
                xs, ys = series.setdefault(layer["id"], ([], []))
                xs.append(look["step"])
                ys.append(max(layer["grad_norm"], 1e-12))
    fig = curves(series, "Gradient norm per layer", "step", "norm")
    fig.update_yaxes(
        type="log", dtick=1, exponentformat="power", showexponent="all"
    )  # one labelled tick a decade
    st.plotly_chart(fig, width="stretch", key=key)


def histogram_figure(hist: dict, title: str, color: str) -> go.Figure:
    counts = hist["counts"]
    width = (hist["hi"] - hist["lo"]) / max(len(counts), 1)
    centers = [hist["lo"] + width * (i + 0.5) for i in range(len(counts))]
    fig = go.Figure(go.Bar(x=centers, y=counts, width=width, marker_color=color, showlegend=False))
    return layout(fig, title, height=220, bargap=0.02)
