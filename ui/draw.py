"""A drawing pad (Streamlit components v2, inline JS): draw with the mouse, pen or finger; the picture comes back
as PNG bytes when a stroke ends."""

import base64

import streamlit as st

SIZE = 280  # pixels on screen; the model gets the picture resized to its input size

HTML = f"""
<div class="pad">
  <canvas width="{SIZE}" height="{SIZE}" aria-label="Drawing pad"></canvas>
  <button type="button" class="clear">Clear</button>
</div>
"""

CSS = """
.pad { display: flex; flex-direction: column; gap: 0.5rem; align-items: flex-start; }
canvas { border: 1px solid var(--st-border-color, #d0d0d0); border-radius: 0.5rem; touch-action: none;
         cursor: crosshair; }
.clear { font: inherit; padding: 0.25rem 0.9rem; border-radius: 0.5rem; cursor: pointer;
         border: 1px solid var(--st-border-color, #d0d0d0); background: var(--st-background-color, white);
         color: var(--st-text-color, black); }
"""

JS = """
export default function(component) {
    const { data, setStateValue, parentElement } = component;
    const canvas = parentElement.querySelector('canvas');
    const ctx = canvas.getContext('2d');
    const paint = () => { ctx.fillStyle = data.background; ctx.fillRect(0, 0, canvas.width, canvas.height); };
    if (!canvas.dataset.ready) { paint(); canvas.dataset.ready = '1'; }
    let last = null;
    const at = (e) => { const r = canvas.getBoundingClientRect();
        return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
    canvas.onpointerdown = (e) => { canvas.setPointerCapture(e.pointerId); last = at(e); canvas.onpointermove(e); };
    canvas.onpointermove = (e) => {
        if (!last) return;
        const p = at(e);
        ctx.strokeStyle = data.pen; ctx.lineWidth = data.width; ctx.lineCap = 'round'; ctx.lineJoin = 'round';
        ctx.beginPath(); ctx.moveTo(last[0], last[1]); ctx.lineTo(p[0], p[1]); ctx.stroke();
        last = p;
    };
    canvas.onpointerup = () => { if (last) { last = null; setStateValue('png', canvas.toDataURL('image/png')); } };
    canvas.onpointerleave = canvas.onpointerup;
    parentElement.querySelector('.clear').onclick = () => { paint(); setStateValue('png', null); };
    canvas.dataset.live = '1';  // the handlers are in place: strokes from now on reach Python
}
"""

_pad = st.components.v2.component("layerlab.draw", html=HTML, css=CSS, js=JS)


def drawing_pad(key: str, pen: str, background: str, width: int) -> bytes | None:
    """The drawing as PNG bytes, or None while the pad is empty."""
    result = _pad(
        data={"pen": pen, "background": background, "width": width},
        key=key,
        on_png_change=lambda: None,
    )
    url = result.png if result is not None else None
    prefix = "data:image/png;base64,"
    if not isinstance(url, str) or not url.startswith(prefix):
        return None
    try:
        return base64.b64decode(url[len(prefix) :], validate=True)
    except ValueError:
        return None
