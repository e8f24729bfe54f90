"""Training X-ray on the pages: the architecture coloured by a signal from the run's sampled diagnostics (engine.xray),
and one layer's histograms and history."""

import streamlit as st
from streamlit_agraph import Config, Edge, Node, agraph

from engine import xray
from ui.charts import COLORS, curves
from ui.inside import histogram_figure

NONE = "#CBD5E1"  # a layer without this signal (no weights, not a ReLU, ...)


def signal_picker(
    key: str, where=st, allow_none: bool = False, disabled: bool = False
) -> str | None:
    options = ([None] if allow_none else []) + list(xray.SIGNALS)
    return where.selectbox(
        "Colour by", options, key=key,
        format_func=lambda s: "layer family" if s is None else xray.SIGNALS[s],
        help="Training X-ray: each layer coloured by what the run's diagnostics last saw in it.\n\n"
        + "\n".join(f"- **{xray.SIGNALS[s]}**: {xray.EXPLAIN[s]}." for s in xray.SIGNALS),
    )  # fmt: skip


def legend(look: dict, signal: str) -> None:
    """The values behind the colours, in words (also what a screen reader gets)."""
    found = xray.values(look, signal)
    if not found:
        st.caption(f"No layer of this model has a {xray.SIGNALS[signal].lower()} to show.")
        return
    st.caption(
        f"X-ray at step {look['step']:,}: {xray.SIGNALS[signal].lower()} — "
        + " · ".join(f"`{nid}` {v:.3g}" for nid, v in found.items())
        + f". Green is healthy, red is not ({xray.EXPLAIN[signal]})."
    )


def small_diagram(spec: dict, look: dict, signal: str, key: str) -> str | None:
    """The run's layers left to right, coloured by the signal; returns the clicked layer."""
    paint = xray.colours(look, signal)
    nodes = [Node(id=n["id"], label=n["id"], shape="box", color=paint.get(n["id"], NONE),
                  font={"color": "#111827", "size": 18}) for n in spec.get("nodes", [])]  # fmt: skip
    ids = [n["id"] for n in spec.get("nodes", [])]
    edges = []
    for i, n in enumerate(spec.get("nodes", [])):
        for src in n.get("inputs") or ([ids[i - 1]] if i else []):
            if src in ids:
                edges.append(Edge(source=src, target=n["id"]))
    cfg = Config(width="100%", height=150, directed=True, physics=False, hierarchical=True)
    cfg.layout = {"hierarchical": {"enabled": True, "direction": "LR", "levelSeparation": 90,
                                   "sortMethod": "directed"}}  # fmt: skip
    for k in ("direction", "levelSeparation", "nodeSpacing", "sortMethod", "groups"):
        cfg.__dict__.pop(k, None)
    cfg.interaction = {"zoomView": False, "dragView": False}
    return agraph(nodes, edges, cfg)


def layer_detail(looks: list[dict], node_id: str, key: str) -> None:
    """One layer: its latest weight and output histograms, and each signal's history over the run."""
    latest = next((layer for layer in looks[-1]["layers"] if layer["id"] == node_id), None)
    if latest is None:
        st.caption(f"'{node_id}' is not in this run's diagnostics.")
        return
    c1, c2 = st.columns(2)
    if "weights" in latest:
        c1.plotly_chart(histogram_figure(latest["weights"], f"{node_id}: weights", COLORS[0]), width="stretch",
                        key=f"{key}.w")  # fmt: skip
    else:
        c1.caption(f"{node_id} has no weights.")
    if "activations" in latest:
        c2.plotly_chart(histogram_figure(latest["activations"], f"{node_id}: outputs", COLORS[1]),
                        width="stretch", key=f"{key}.a")  # fmt: skip
    past = xray.history(looks, node_id)
    if past:
        cols = st.columns(len(past))
        for col, (signal, (steps, vals)) in zip(cols, past.items(), strict=True):
            with col:
                fig = curves({xray.SIGNALS[signal]: (steps, vals)}, f"{node_id}: {xray.SIGNALS[signal].lower()}",
                             "step", "")  # fmt: skip
                if signal in ("grad_norm", "update_ratio"):
                    fig.update_yaxes(type="log")
                st.plotly_chart(fig, width="stretch", key=f"{key}.h.{signal}")


def xray_panel(spec: dict, looks: list[dict], key: str) -> None:
    """The Train page's small copy: the diagram coloured by a signal, its values in words, and the clicked (or
    chosen) layer's histograms and history."""
    latest = looks[-1]
    signal = signal_picker(f"{key}.signal")
    clicked = small_diagram(spec, latest, signal, key)
    legend(latest, signal)
    ids = [layer["id"] for layer in latest["layers"]]
    if clicked in ids and clicked != st.session_state.get(f"{key}.clicked"):
        st.session_state[f"{key}.clicked"] = clicked
        st.session_state[f"{key}.layer"] = clicked
    pick = st.selectbox("Layer", ids, key=f"{key}.layer", help="Or click a layer in the diagram.")
    layer_detail(looks, pick, key)
