"""The Build page's graph canvas: a custom component (st.components.v2), plain DOM and SVG, no JS dependencies.

Drop a layer from the palette onto the canvas (or onto an edge, to insert it there), drag from a layer's output
port (right) to another's input port (left) to connect them, click an edge and press Delete to remove it, drag
layers (several after a shift-drag box-select), pan by dragging the background, zoom with the wheel. While an edge
is dragged, the inputs that can take its shape are green. Each gesture comes back as one event dict, which
`engine.canvas.apply` turns into a spec edit; the view (pan and zoom) survives the rerun.
"""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent

_component = st.components.v2.component(
    "layerlab_canvas",
    css=(HERE / "canvas.css").read_text(encoding="utf-8"),
    js=(HERE / "canvas.js").read_text(encoding="utf-8"),
)


def model_canvas(data: dict, key: str) -> dict | None:
    """Draw the canvas for `data` (palette, nodes with positions, edges, height, flags); return this rerun's
    gesture ({'action': ...}) or None."""
    result = _component(data=data, key=key, on_event_change=lambda: None)
    return getattr(result, "event", None) if result is not None else None
