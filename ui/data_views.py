"""Drawings of a prepared dataset: class balance, 2-D scatter, sample images."""

import plotly.graph_objects as go
import streamlit as st
import torch
from pydantic import ValidationError

from engine.data.series import PARTS, kept_series
from engine.data.store import Dataset
from engine.data.tabular import Split
from ui.charts import COLORS, MAX_POINTS, layout, short_labels


def series_chart(ds: Dataset) -> go.Figure:
    """The prepared series, its training, validation and test parts shaded in time order."""
    series, target = kept_series(ds), ds.meta["preprocessing"]["columns"][0]
    step = max(1, len(series) // MAX_POINTS)
    shown = series.iloc[::step]
    time = shown["time"].astype(str).tolist()
    fig = go.Figure(
        go.Scatter(x=time, y=shown["value"], mode="lines", line=dict(color=COLORS[0], width=1))
    )
    cuts = [0, int(len(shown) * PARTS[0]), int(len(shown) * (PARTS[0] + PARTS[1])), len(shown) - 1]
    for (name, color), lo, hi in zip(
        (("train", "#E0E7FF"), ("validation", "#FEF3C7"), ("test", "#D1FAE5")),
        cuts[:-1],
        cuts[1:],
        strict=True,
    ):
        fig.add_vrect(
            x0=time[lo], x1=time[hi], fillcolor=color, opacity=0.5, line_width=0, layer="below"
        )
        fig.add_annotation(x=time[(lo + hi) // 2], y=1.02, yref="paper", text=name, showarrow=False)
    return layout(fig, f"{target}: split by time", height=300, showlegend=False)


def class_balance(ds: Dataset) -> go.Figure:
    counts = torch.bincount(ds.tensors["y_train"], minlength=ds.num_classes).tolist()
    classes = [str(c) for c in ds.meta["classes"]]
    fig = go.Figure(
        go.Bar(
            x=short_labels(classes),
            y=counts,
            customdata=classes,  # the hover names them whole
            hovertemplate="%{customdata}: %{y} rows<extra></extra>",
            marker_color=[COLORS[k % len(COLORS)] for k in range(len(counts))],
        )
    )
    fig = layout(
        fig, "Class balance (training split)", height=300, xaxis_title="class", yaxis_title="rows"
    )
    fig.update_xaxes(type="category")
    return fig


def scatter_2d(ds: Dataset) -> go.Figure:
    x, y = ds.tensors["x_train"], ds.tensors["y_train"]
    fig = go.Figure()
    names = ds.meta["feature_names"]
    if ds.task == "classification":
        for k, name in enumerate(ds.meta["classes"]):
            pts = x[y == k]
            fig.add_trace(
                go.Scattergl(
                    x=pts[:, 0],
                    y=pts[:, 1],
                    mode="markers",
                    name=str(name),
                    marker=dict(size=6, color=COLORS[k % len(COLORS)], opacity=0.8),
                )
            )
    else:
        fig.add_trace(
            go.Scattergl(
                x=x[:, 0],
                y=x[:, 1],
                mode="markers",
                marker=dict(size=6, color=y, colorscale="Viridis", showscale=True),
            )
        )
    fig = layout(
        fig,
        "Training points (standardized)",
        height=360,
        xaxis_title=names[0],
        yaxis_title=names[1],
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def image_grid(ds: Dataset, n: int = 16, transform=None, per_row: int = 8) -> None:
    x, y = ds.tensors["x_train"][:n], ds.tensors["y_train"][:n]
    x = x.float() / 255 if x.dtype == torch.uint8 else x
    if transform is not None:
        x = transform(x)
    cols = st.columns(per_row)
    for i in range(len(x)):
        img = x[i][0] if x[i].shape[0] == 1 else x[i].permute(1, 2, 0)
        with cols[i % per_row]:
            st.image(
                img.clamp(0, 1).numpy(), caption=ds.meta["classes"][int(y[i])], width=64, clamp=True
            )


def token_preview(ds: Dataset, n: int = 6) -> None:
    """The text's token ids per row (the last part of a row that also has other columns)."""
    vocab, classes = ds.meta["vocab"], ds.meta["classes"]
    length = (ds.meta.get("preprocessing") or {}).get("text", {}).get(
        "max_length"
    ) or ds.input_shape[0]
    rows = [
        {
            "label": classes[int(label)],
            "tokens": " ".join(vocab[int(t)] for t in ids if int(t)),
            "ids": " ".join(str(int(t)) for t in ids),
        }
        for ids, label in zip(
            ds.tensors["x_train"][:n, -length:], ds.tensors["y_train"][:n], strict=True
        )
    ]
    st.caption(
        f"The text as tokens (vocabulary of {len(vocab)} words, id 0 pads, padded to {length})"
    )
    st.dataframe(rows, hide_index=True, width="stretch")


def column_editor(frame, target: str, key: str) -> list:
    """The column plan as an editable table; returns the edited plans."""
    from engine.data.tabular import ColumnPlan, suggest_columns

    suggested = [p.model_dump() for p in suggest_columns(frame, target)]
    ignored = [p["name"] for p in suggested if p["role"] == "ignore"]
    said = f": {', '.join(ignored)} set to ignore (the note says why)" if ignored else ""
    st.caption(f"Suggested from the data{said}. Change any cell.")
    cfg = st.column_config
    edited = st.data_editor(
        suggested,
        key=key,
        hide_index=True,
        width="stretch",
        num_rows="fixed",
        disabled=["name", "note"],
        column_config={
            "name": cfg.TextColumn("column"),
            "role": cfg.SelectboxColumn("role", options=["feature", "ignore"], required=True),
            "kind": cfg.SelectboxColumn(
                "type", options=["numeric", "categorical", "boolean", "text"], required=True
            ),
            "missing": cfg.SelectboxColumn(
                "missing values",
                options=["median", "mean", "most_frequent", "constant", "drop"],
                required=True,
                help="drop removes the rows; the others fill the gaps",
            ),
            "fill_value": cfg.TextColumn(
                "constant", help="The value used by the 'constant' strategy."
            ),
            "scaling": cfg.SelectboxColumn(
                "scaling",
                options=["standard", "minmax", "none"],
                required=True,
                help="Numbers only: standard = mean 0, std 1; minmax = 0..1.",
            ),
            "encoding": cfg.SelectboxColumn(
                "encoding",
                options=["onehot", "index"],
                required=True,
                help="Categories only: one-hot columns, or one index (for an embedding).",
            ),
            "note": cfg.TextColumn("why"),
        },
    )
    return [ColumnPlan.model_validate(row) for row in edited]


def health_panel(ds: Dataset) -> dict | None:
    """The health verdict and findings, each fix a button; returns the fix clicked (the page prepares again)."""
    from engine.data.prepare import can_prepare_again
    from ui import state

    meta = ds.meta
    health = meta["health"]
    clicked = None
    with st.container(border=True):
        icon = ":material/check_circle:" if not health["warnings"] else ":material/warning:"
        st.markdown(f"{icon} **Data health: {health['verdict']}** {health['implies']}")
        for w in health["warnings"]:
            st.warning(w)
        fixes = health.get("fixes") or []
        if fixes and can_prepare_again(ds):
            cols = st.columns(len(fixes))
            for i, (col, fix) in enumerate(zip(cols, fixes, strict=True)):
                if col.button(
                    fix["label"],
                    key=f"health.fix.{i}",
                    icon=":material/build:",
                    width="stretch",
                    help="Prepares the same file again with this change.",
                ):
                    clicked = fix
        elif fixes:
            st.caption(
                "To fix these, upload the file again and change the column plan (this dataset was not "
                "prepared from a kept file)."
            )
        if health.get("class_weights") and health.get("imbalance_ratio", 1) >= 1.5:
            weights = ", ".join(
                f"{c}: {w:.2f}"
                for c, w in zip(meta["classes"], health["class_weights"], strict=True)
            )
            on = bool(state.train_settings().get("class_weights"))
            if (
                st.toggle(
                    f"Use class weights in training ({weights})",
                    value=on,
                    key="data.class_weights",
                    help="Weights each class's loss by how rare it is, so rare classes count as much.",
                )
                != on
            ):
                state.set_train({**state.train_settings(), "class_weights": not on})
    return clicked


def augmentation_panel(ds: Dataset) -> None:
    """Augmentation settings (saved with the training settings) and the same images as training will see them."""
    from engine.train.augment import augment
    from engine.train.config import TrainConfig
    from ui import state

    saved = state.train_settings()
    summary = st.empty()  # filled once the widgets below have given this run's settings
    # A constant label and `expanded`: the expander keeps its open state while the settings change.
    with st.expander(":material/auto_fix_high: Augmentation for training"):
        c = st.columns(4)
        settings = {
            "flip": c[0].toggle(
                "Random flip",
                value=bool(saved["flip"]),
                key="aug.flip",
                help="Mirror left-right; fine for photos, wrong for digits or text.",
            ),
            "crop_padding": c[1].number_input(
                "Crop padding (px)",
                0,
                16,
                int(saved["crop_padding"]),
                key="aug.crop",
                help="Pad, then crop at a random offset.",
            ),
            "rotation": c[2].number_input(
                "Rotation (°)",
                0.0,
                45.0,
                float(saved["rotation"]),
                step=5.0,
                key="aug.rotation",
                help="Up to this angle either way.",
            ),
            "noise": c[3].number_input(
                "Noise (std)",
                0.0,
                1.0,
                float(saved["noise"]),
                step=0.05,
                key="aug.noise",
                help="Gaussian noise added to the pixels.",
            ),
        }
        state.set_train({**saved, **settings})
        on = [
            name
            for name, value in (
                ("flip", settings["flip"]),
                ("crop", settings["crop_padding"]),
                ("rotation", settings["rotation"]),
                ("noise", settings["noise"]),
            )
            if value
        ]
        summary.caption(f"Augmentation for training: {', '.join(on) if on else 'off'}.")
        st.caption(
            "Applied to each training batch on the device; validation and test images are left as they are. "
            "The same 16 images, augmented:"
        )
        cfg = TrainConfig.parse({**saved, **settings})
        gen = torch.Generator().manual_seed(0)
        image_grid(ds, transform=lambda x: augment(x, cfg, gen).clamp(0, 1))


def split_inputs(key: str, current: dict | None = None) -> Split | None:
    """The validation and test shares (percent of the rows; the rest trains), stored with the dataset; None, with
    the reason shown, when they leave too little to train on."""
    current = current or {}
    c1, c2 = st.columns(2)
    val = c1.number_input("Validation %", 5, 50, round(100 * current.get("val", 0.15)), key=f"{key}.val",
                          help="Rows each epoch is checked on (Keras' validation_split=0.2 is 20%).")  # fmt: skip
    test = c2.number_input("Test %", 5, 50, round(100 * current.get("test", 0.15)), key=f"{key}.test",
                           help="Rows held out until the Evaluate page.")  # fmt: skip
    try:
        return Split(val=val / 100, test=test / 100)
    except ValidationError as e:
        st.error(
            e.errors()[0]["msg"].removeprefix("Value error, ").capitalize() + ".",
            icon=":material/block:",
        )
        return None
