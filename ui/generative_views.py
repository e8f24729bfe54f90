"""A VAE's views: picture grids (originals over reconstructions, prior samples, an interpolation), the latent map and
the Evaluate page's cards."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from ui.charts import COLORS, layout

GRID_PIXELS = 72  # each small picture is shown this many pixels wide


def picture_grid(rows: list[list]) -> np.ndarray:
    """Rows of uint8 pictures (H, W grey or H, W, 3 colour, as nested lists) as one image with 2-pixel white gaps,
    each picture scaled up by a whole factor so that small images stay sharp."""
    first = np.asarray(rows[0][0], np.uint8)
    h, w = first.shape[:2]
    zoom = max(1, GRID_PIXELS // max(h, w))
    colour = first.ndim == 3
    columns = max(len(r) for r in rows)
    gap = 2
    canvas = np.full(
        (
            len(rows) * (h * zoom + gap) - gap,
            columns * (w * zoom + gap) - gap,
            *((3,) if colour else ()),
        ),
        255,
        np.uint8,
    )
    for i, row in enumerate(rows):
        for j, picture in enumerate(row):
            big = np.asarray(picture, np.uint8).repeat(zoom, 0).repeat(zoom, 1)
            top, left = i * (h * zoom + gap), j * (w * zoom + gap)
            canvas[top : top + h * zoom, left : left + w * zoom] = big
    return canvas


def show_pictures(rows: list[list], caption: str) -> None:
    st.image(picture_grid(rows), caption=caption)


def show_pairs(originals: list, rebuilt: list, image: bool, caption: str) -> None:
    """Originals above what the model rebuilds of them: pictures in two rows, or table rows in pairs."""
    if image:
        show_pictures([originals, rebuilt], caption)
        return
    pairs = [
        {"row": f"{i} {kind}", **values}
        for i, both in enumerate(zip(originals, rebuilt, strict=True))
        for kind, values in zip(("original", "rebuilt"), both, strict=True)
    ]
    st.caption(caption.replace(" (top)", ", each above its reconstruction"))
    st.dataframe(pd.DataFrame(pairs).set_index("row").round(3), width="stretch")


def show_samples(samples: list, image: bool, caption: str, per_row: int = 8) -> None:
    if image:
        show_pictures([samples[i : i + per_row] for i in range(0, len(samples), per_row)], caption)
    else:
        st.caption(caption)
        st.dataframe(pd.DataFrame(samples).round(3), hide_index=True, width="stretch")


def latent_figure(latent: dict) -> go.Figure:
    """The codes of the split on a plane, one colour per label."""
    fig = go.Figure()
    labels = latent["labels"] or [""] * len(latent["x"])
    xs, ys = np.asarray(latent["x"]), np.asarray(latent["y"])
    present = set(labels)
    for i, name in enumerate([c for c in latent["classes"] if c in present] or [""]):
        keep = np.asarray([label == name for label in labels])
        fig.add_trace(
            go.Scattergl(
                x=xs[keep],
                y=ys[keep],
                mode="markers",
                name=str(name) or "codes",
                marker=dict(size=5, color=COLORS[i % len(COLORS)], opacity=0.75),
            )
        )
    if latent["explained"]:
        a, b = latent["explained"]
        axes = (f"main axis 1 ({a:.0%} of the variance)", f"main axis 2 ({b:.0%})")
    else:
        axes = ("latent 1", "latent 2")
    layout(fig, "Latent map", height=420, showlegend=bool(latent["labels"]))
    fig.update_xaxes(title=axes[0])
    fig.update_yaxes(title=axes[1])
    return fig


def vae_cards(summary: dict, loss_title: str) -> None:
    cards = st.columns(4)
    cards[0].metric(
        "Reconstruction",
        f"{summary['reconstruction']:.4g}",
        delta=f"{summary['reconstruction'] / max(summary['mean_row_reconstruction'], 1e-12):.2f}× the mean row's",
        delta_arrow="off",
        help=f"{loss_title} per row, summed over its values, each row coded by its mean. The mean row: the "
        "average training row used as everyone's reconstruction. Lower is better.",
    )
    cards[1].metric(
        "KL per row",
        f"{summary['kl']:.3g}",
        help="How far the codes are from the prior N(0, 1), in nats. Near 0: the decoder ignores the code "
        "(posterior collapse); large: the codes spread beyond where samples are drawn.",
    )
    cards[2].metric(
        "Mean squared error",
        f"{summary['mse']:.3g}",
        delta=f"mean row: {summary['mean_row_mse']:.3g}",
        delta_arrow="off",
        help="Per value, between the inputs (pixels from 0 to 1, or scaled numbers) and their reconstructions.",
    )
    cards[3].metric("Latent size", f"{summary['latent_size']}")


def points_figure(real: list, generated: list, title: str) -> go.Figure:
    """Generated 2-D points over the data's, as GAN Lab draws them (the first two numbers of wider rows)."""
    fig = go.Figure()
    for name, points, colour in (("data", real, "#94A3B8"), ("generated", generated, COLORS[0])):
        if points:
            xy = np.asarray(points, dtype=float)
            ys = xy[:, 1] if xy.shape[1] > 1 else np.zeros(len(xy))
            fig.add_trace(
                go.Scattergl(
                    x=xy[:, 0],
                    y=ys,
                    mode="markers",
                    name=name,
                    marker=dict(size=4, color=colour, opacity=0.6),
                )  # fmt: skip
            )
    layout(fig, title, height=380)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def show_generated(shown: dict, caption: str, key: str) -> None:
    """A GAN's samples: a picture grid, or its points over the data's."""
    if shown.get("image"):
        show_samples(shown["samples"], True, caption)
        return
    ys = shown["y"] or [0.0] * len(shown["x"])
    generated = [[a, b] for a, b in zip(shown["x"], ys, strict=True)]
    figure = points_figure(shown.get("real") or [], generated, caption)
    st.plotly_chart(figure, width="stretch", key=key)


def gan_cards(summary: dict) -> None:
    cards = st.columns(4)
    if "d_real_accuracy" in summary:
        cards[0].metric(
            "D on real rows",
            f"{summary['d_real_accuracy']:.1%}",
            help="How many of the split's rows the discriminator calls real.",
        )
        cards[1].metric(
            "D on generated",
            f"{summary['d_fake_accuracy']:.1%}",
            help="How many generated samples it calls generated. Near 50% on both: the generator fools it half "
            "the time; near 100%: the discriminator wins outright.",
        )
    if "modes_covered" in summary:
        cards[2].metric(
            "Modes covered",
            f"{summary['modes_covered']:.0%}",
            help="Of the data's labelled modes, those with at least a quarter of their fair share of generated "
            "points (within 3 spreads of the mode's centre). Low: mode collapse.",
        )
        cards[3].metric(
            "Points on a mode",
            f"{summary['quality']:.0%}",
            help="Generated points within 3 spreads of their nearest mode.",
        )
    else:
        cards[2].metric("Noise size", f"{summary['noise']}")
