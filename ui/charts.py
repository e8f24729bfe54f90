"""Plotly figures in the app's theme."""

import plotly.graph_objects as go

PRIMARY = "#4F46E5"
COLORS = [
    "#4F46E5",
    "#F97316",
    "#10B981",
    "#EF4444",
    "#0EA5E9",
    "#A855F7",
    "#EAB308",
    "#64748B",
    "#EC4899",
    "#14B8A6",
]
FONT = dict(family="Source Sans Pro, sans-serif", size=13, color="#1F2333")
MAX_POINTS = 2000  # per trace: keeps each chart update cheap (DESIGN.md: ~9 ms at 1k points)


def layout(fig: go.Figure, title: str = "", height: int = 300, **kw) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)),
        height=height,
        font=FONT,
        colorway=COLORS,
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        plot_bgcolor="#FFFFFF",
        paper_bgcolor="rgba(0,0,0,0)",
        legend=dict(orientation="h", y=-0.3, yanchor="top"),
        **kw,
    )
    fig.update_xaxes(gridcolor="#ECEEF5", zeroline=False)
    fig.update_yaxes(gridcolor="#ECEEF5", zeroline=False)
    return fig


def downsample(xs: list, ys: list, limit: int = MAX_POINTS) -> tuple[list, list]:
    if len(xs) <= limit:
        return xs, ys
    step = len(xs) / limit
    keep = [int(i * step) for i in range(limit)] + [len(xs) - 1]
    return [xs[i] for i in keep], [ys[i] for i in keep]


def smooth(values: list[float], alpha: float = 0.3) -> list[float]:
    out, s = [], None
    for v in values:
        s = v if s is None else alpha * v + (1 - alpha) * s
        out.append(s)
    return out


def curves(
    series: dict[str, tuple[list, list]],
    title: str,
    xaxis: str,
    yaxis: str,
    percent: bool = False,
    best_x=None,
) -> go.Figure:
    fig = go.Figure()
    for i, (name, (xs, ys)) in enumerate(series.items()):
        xs, ys = downsample(xs, ys)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                name=name,
                mode="lines+markers" if len(xs) < 40 else "lines",
                line=dict(color=COLORS[i % len(COLORS)], width=2),
                marker=dict(size=5),
            )
        )
    if best_x is not None:
        fig.add_vline(
            x=best_x,
            line=dict(color="#94A3B8", dash="dot"),
            annotation_text="best",
            annotation_position="top left",
        )
    # The legend sits below the plot, one line per long name: the chart grows with it rather than the plot shrinking.
    fig = layout(
        fig, title, height=300 + 24 * max(0, len(series) - 1), xaxis_title=xaxis, yaxis_title=yaxis
    )
    values = {y for _, ys in series.values() for y in ys if y is not None}
    if (
        len(values) == 1 and (v := values.pop()) > 0
    ):  # a constant: a flat line at its value above zero, not ±1
        fig.update_yaxes(range=[0, v * 1.1])
    if percent:
        fig.update_yaxes(tickformat=".0%")
    return fig


def probability_bars(probs: dict[str, float]) -> go.Figure:
    """Each class's probability as a horizontal bar, in percent, the app's theme."""
    names = list(probs)
    fig = go.Figure(
        go.Bar(
            x=[probs[n] for n in names],
            y=names,
            orientation="h",
            marker_color=PRIMARY,
            text=[f"{probs[n]:.0%}" for n in names],
            textposition="auto",
        )
    )
    fig = layout(
        fig,
        "Probability per class",
        height=max(180, 26 * len(names) + 70),
        xaxis_title="probability",
    )
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(type="category", autorange="reversed", automargin=True)
    return fig


LABEL_CHARS = (
    18  # class names longer than this are shortened on the axes (the hover shows them whole)
)


def short_labels(names: list[str]) -> list[str]:
    """Axis labels: long names cut with an ellipsis, kept distinct."""
    out = []
    for i, name in enumerate(map(str, names)):
        label = name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"
        out.append(label if label not in out else f"{label} ({i})")
    return out


def forecast_figure(
    time: list, actual: list, forecasts: list[dict], target: str, title: str
) -> go.Figure:
    """The actual series as a line and each forecast (`time`, `value`) over it, in its own colour with markers, so
    the horizon each one covers is plain to see."""
    fig = go.Figure(
        go.Scatter(
            x=time, y=actual, mode="lines", name="actual", line=dict(color="#64748B", width=1.5)
        )
    )
    for i, f in enumerate(forecasts):
        fig.add_scatter(
            x=f["time"],
            y=f["value"],
            mode="lines+markers",
            name="forecast",
            legendgroup="forecast",
            showlegend=i == 0,
            line=dict(color=COLORS[i % 2], width=2),
            marker=dict(size=4),
        )
    return layout(fig, title, height=340, yaxis_title=target)
