"""The architecture as a picture for a report or a slide: SVG and PNG, the same drawing.

Boxes where the Build page's canvas puts them (its saved layout, else left to right by depth), each with the layer's
name, id, key parameters and output shape under a stripe of its family's colour; edges as curves labelled with the
tensor shape they carry. A clean, flat style in the manner of NN-SVG. `python -m engine diagram` draws the same.
"""

import io
import math
from xml.sax.saxutils import escape

from engine import canvas
from engine import spec as specs
from engine.compiler import analyse

PAD = 24
INK, MUTED, EDGE, ERROR, SKIP = "#1F2333", "#5B6075", "#94A3B8", "#DC2626", "#EC4899"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scene(spec: dict, meta: dict) -> dict:
    """What to draw: boxes (with their texts) and edges (as points along each curve), in pixels from the top left,
    and the picture's size."""
    infos, error = analyse(spec, specs.data_inputs(meta))
    drawn = canvas.graph(spec, meta, infos, error)
    at = {n["id"]: n for n in drawn["nodes"]}
    curves = [
        canvas.curve(
            (at[e["src"]]["x"] + canvas.NODE_W, at[e["src"]]["y"] + canvas.PORT_Y),
            (at[e["dst"]]["x"], at[e["dst"]]["y"] + canvas.PORT_Y),
        )
        for e in drawn["edges"]
    ]
    xs = [n["x"] for n in drawn["nodes"]]
    ys = [n["y"] for n in drawn["nodes"]] + [
        _bezier(*c, 0.5)[1] - 12 for c in curves
    ]  # a skip's arc and its label
    x0, y0 = min(xs) - PAD, min(ys) - PAD - 8
    boxes = []
    for n in drawn["nodes"]:
        boxes.append(
            {
                "id": n["id"],
                "x": n["x"] - x0,
                "y": n["y"] - y0,
                "w": canvas.NODE_W,
                "h": canvas.NODE_H,
                "color": n["color"],
                "title": n["title"],
                "tag": "" if n["source"] else n["id"],
                "detail": _short(n["detail"], 26),
                "shape": n["shape"],
                "bad": bool(n.get("error")),
                "source": n["source"],
            }
        )
    edges = []
    for e, c in zip(drawn["edges"], curves, strict=True):
        c = tuple((x - x0, y - y0) for x, y in c)
        mid = _bezier(*c, 0.5)
        edges.append(
            {
                "curve": c,
                "points": [_bezier(*c, t / 24) for t in range(25)],
                "label": e["label"],
                "mid": (mid[0], mid[1] - 5),
                "skip": e["skip"],
            }
        )
    width = max(b["x"] + b["w"] for b in boxes) + PAD
    height = max(b["y"] + b["h"] for b in boxes) + PAD
    return {"boxes": boxes, "edges": edges, "width": math.ceil(width), "height": math.ceil(height)}


def _bezier(p0, p1, p2, p3, t: float) -> tuple[float, float]:
    """The point at `t` (0 to 1) along a cubic Bézier."""
    u = 1 - t
    return tuple(
        u**3 * a + 3 * u * u * t * b + 3 * u * t * t * c + t**3 * d
        for a, b, c, d in zip(p0, p1, p2, p3, strict=True)
    )


def svg(spec: dict, meta: dict) -> str:
    """The diagram as SVG text."""
    s = scene(spec, meta)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{s["width"]}" height="{s["height"]}" '
        f'viewBox="0 0 {s["width"]} {s["height"]}" font-family="Helvetica, Arial, sans-serif">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{EDGE}"/></marker></defs>',
        f'<rect width="{s["width"]}" height="{s["height"]}" fill="#FFFFFF"/>',
    ]
    for e in s["edges"]:
        (a, b, c, d) = e["curve"]
        out.append(
            f'<path d="M{a[0]:.1f},{a[1]:.1f} C{b[0]:.1f},{b[1]:.1f} {c[0]:.1f},{c[1]:.1f} {d[0]:.1f},{d[1]:.1f}" '
            f'fill="none" stroke="{SKIP if e["skip"] else EDGE}" stroke-width="1.5" marker-end="url(#arrow)"/>'
        )
        out.append(
            f'<text x="{e["mid"][0]:.1f}" y="{e["mid"][1]:.1f}" font-size="10" text-anchor="middle" '
            f'fill="{MUTED}" font-family="Menlo, monospace" stroke="#FFFFFF" stroke-width="3" '
            f'paint-order="stroke">{escape(e["label"])}</text>'
        )
    for b in s["boxes"]:
        x, y, w, h = b["x"], b["y"], b["w"], b["h"]
        fill = "#FEF2F2" if b["bad"] else ("#F1F5F9" if b["source"] else "#FFFFFF")
        out.append(f'<g class="layer" data-id="{escape(b["id"])}">')
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w}" height="{h}" rx="7" fill="{fill}" '
            f'stroke="{ERROR if b["bad"] else "#CBD5E1"}"/>'
        )
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w}" height="5" rx="2" fill="{b["color"]}"/>'
        )
        out.append(
            f'<text x="{x + 9:.1f}" y="{y + 22:.1f}" font-size="13" font-weight="bold" fill="{INK}">'
            f"{escape(b['title'])}"
            + (
                f'<tspan font-weight="normal" font-size="10" fill="{MUTED}"> {escape(b["tag"])}</tspan>'
                if b["tag"]
                else ""
            )
            + "</text>"
        )
        out.append(
            f'<text x="{x + 9:.1f}" y="{y + 40:.1f}" font-size="11" fill="{MUTED}">{escape(b["detail"])}</text>'
        )
        out.append(
            f'<text x="{x + 9:.1f}" y="{y + 58:.1f}" font-size="11" font-family="Menlo, monospace" '
            f'fill="{ERROR if b["bad"] else "#4F46E5"}">{escape(b["shape"])}</text>'
        )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def png(spec: dict, meta: dict, scale: float = 2.0) -> bytes:
    """The diagram as a PNG, drawn at `scale` (2: sharp on a slide)."""
    from PIL import Image, ImageDraw, ImageFont

    s = scene(spec, meta)
    img = Image.new("RGB", (math.ceil(s["width"] * scale), math.ceil(s["height"] * scale)), "white")
    draw = ImageDraw.Draw(img)

    def font(size: float):
        return ImageFont.load_default(size=size * scale)

    def xy(p):
        return (p[0] * scale, p[1] * scale)

    for e in s["edges"]:
        colour = SKIP if e["skip"] else EDGE
        draw.line([xy(p) for p in e["points"]], fill=colour, width=max(1, round(1.5 * scale)))
        tip, before = e["points"][-1], e["points"][-3]
        angle = math.atan2(tip[1] - before[1], tip[0] - before[0])
        wing = [
            (tip[0] - 8 * math.cos(angle + a), tip[1] - 8 * math.sin(angle + a))
            for a in (0.45, -0.45)
        ]
        draw.polygon([xy(tip), xy(wing[0]), xy(wing[1])], fill=colour)
        draw.text(
            xy(e["mid"]), e["label"], fill=MUTED, font=font(10), anchor="ms",
            stroke_width=round(2 * scale), stroke_fill="white",
        )  # fmt: skip
    for b in s["boxes"]:
        x, y, w, h = b["x"], b["y"], b["w"], b["h"]
        fill = "#FEF2F2" if b["bad"] else ("#F1F5F9" if b["source"] else "#FFFFFF")
        draw.rounded_rectangle(
            [xy((x, y)), xy((x + w, y + h))], radius=7 * scale, fill=fill,
            outline=ERROR if b["bad"] else "#CBD5E1", width=max(1, round(scale)),
        )  # fmt: skip
        draw.rectangle([xy((x, y)), xy((x + w, y + 5))], fill=b["color"])
        draw.text(xy((x + 9, y + 22)), b["title"], fill=INK, font=font(13), anchor="ls")
        if b["tag"]:
            left = x + 9 + draw.textlength(b["title"], font=font(13)) / scale + 4
            draw.text(xy((left, y + 22)), b["tag"], fill=MUTED, font=font(10), anchor="ls")
        draw.text(xy((x + 9, y + 40)), b["detail"], fill=MUTED, font=font(11), anchor="ls")
        draw.text(
            xy((x + 9, y + 58)),
            b["shape"],
            fill=ERROR if b["bad"] else "#4F46E5",
            font=font(11),
            anchor="ls",
        )
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def meta_from_spec(spec: dict) -> dict | None:
    """The input shapes a spec carries itself (a run's spec has them), as a dataset meta; None when one is
    missing."""
    parts = {
        name: {"shape": (i or {}).get("shape"), "tokens": bool((i or {}).get("tokens"))}
        for name, i in (spec.get("inputs") or {}).items()
    }
    if not parts or any(not p["shape"] for p in parts.values()):
        return None
    first = next(iter(parts.values()))
    return {"input_shape": first["shape"], "inputs": parts if len(parts) > 1 else None}
