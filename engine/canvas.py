"""The model as a graph to draw and edit: each canvas gesture as a spec edit, where each node is drawn, which inputs
a dragged connection could join without a shape error, and one-click fixes for a node whose inputs do not fit.

Every function takes and returns a spec dict (`engine.spec`'s format) and never validates it: the Build page
validates the result like any other edit. Node positions live in the spec's `layout` ({id: [x, y]}, the inputs
under their references such as `input`), which does not change the model.
"""

import json
import math

from engine import spec as specs
from engine.compiler import analyse, fits
from engine.registry import FAMILY_COLORS, get_op

NODE_W, NODE_H = 164, 70  # a node's box on the canvas and in the exported diagram, in canvas units
GAP_X, GAP_Y = 52, 50  # room under a node for two lines of what is wrong with it
PORT_Y = 26  # where edges meet a node, from its top


def node_detail(node: dict) -> str:
    """A node's key parameters: the first one's value, then any other changed from its default, by its title."""
    params_cls = get_op(node["op"]).params
    defaults = params_cls().model_dump(mode="json")
    parts = []
    for i, (k, v) in enumerate(node.get("params", {}).items()):
        title = params_cls.model_fields[k].title.lower() if k in params_cls.model_fields else k
        if i == 0:
            parts.append(f"{title} {v}" if isinstance(v, float) else str(v))
        elif v != defaults.get(k):
            parts.append(f"{title} {v}")
    return " · ".join(parts)


def _same_input(spec: dict) -> dict[str, str]:
    """`input:<first input>` is also called `input`."""
    first = next(iter(spec.get("inputs") or {specs.FIRST_INPUT: {}}))
    return {specs.INPUT_PREFIX + first: "input"}


def wiring(spec: dict) -> dict[str, list[str]]:
    """Each node's inputs made explicit (the implicit 'previous node' named), [] for a node not connected yet."""
    same, out, prev = _same_input(spec), {}, "input"
    for n in spec["nodes"]:
        ins = n.get("inputs")
        out[n["id"]] = [same.get(i, i) for i in ins] if ins is not None else [prev]
        prev = n["id"]
    return out


def output_id(spec: dict) -> str:
    return spec.get("output") or spec["nodes"][-1]["id"]


def rewire(spec: dict, wires: dict[str, list[str]]) -> dict:
    """The spec wired as `wires` says: nodes in an order where each comes after its inputs (the current order where
    it allows, the output last), and a node whose one input is the node before it left implicit."""
    by_id = {n["id"]: n for n in spec["nodes"]}
    out = output_id(spec)
    remaining = [i for i in by_id if i != out] + [out]
    order: list[str] = []
    while remaining:
        ready = next(
            (i for i in remaining if all(s not in by_id or s in order for s in wires[i])), None
        )
        if ready is None:  # a cycle: keep the rest as it is; validation names the cycle
            order += remaining
            break
        order.append(ready)
        remaining.remove(ready)
    nodes, prev = [], "input"
    for i in order:
        n = dict(by_id[i])
        single = get_op(n["op"]) is not None and get_op(n["op"]).max_inputs == 1
        n["inputs"] = None if single and wires[i] == [prev] else list(wires[i])
        nodes.append(n)
        prev = i
    declared = dict(spec.get("inputs") or {specs.FIRST_INPUT: {}})
    for ins in wires.values():
        for ref in ins:
            name = ref[len(specs.INPUT_PREFIX) :] if ref.startswith(specs.INPUT_PREFIX) else None
            if name and name not in declared:
                declared[name] = {"shape": None}
    new = {**spec, "nodes": nodes, "inputs": declared}
    if order[-1] != out:
        new["output"] = out
    if spec.get("layout"):
        keep = set(by_id) | {"input"} | {specs.input_ref(k, next(iter(declared))) for k in declared}
        new["layout"] = {k: v for k, v in spec["layout"].items() if k in keep}
    return new


def _descendants(wires: dict[str, list[str]], node: str) -> set[str]:
    users: dict[str, list[str]] = {}
    for dst, ins in wires.items():
        for src in ins:
            users.setdefault(src, []).append(dst)
    seen, stack = set(), [node]
    while stack:
        for nxt in users.get(stack.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def connect(spec: dict, src: str, dst: str) -> dict:
    """Wire `src`'s output into `dst`: it replaces a one-input layer's input, and joins a merge's."""
    wires = wiring(spec)
    src = _same_input(spec).get(src, src)
    if get_op(_node(spec, dst)["op"]).max_inputs == 1:
        wires[dst] = [src]
    elif src not in wires[dst]:
        wires[dst] = [*wires[dst], src]
    return rewire(spec, wires)


def disconnect(spec: dict, src: str, dst: str) -> dict:
    wires = wiring(spec)
    src = _same_input(spec).get(src, src)
    wires[dst] = [s for s in wires[dst] if s != src]
    return rewire(spec, wires)


def _node(spec: dict, node_id: str) -> dict:
    return next(n for n in spec["nodes"] if n["id"] == node_id)


def _new_node(spec: dict, op: str, meta: dict | None, params: dict | None = None) -> dict:
    node_id = specs.new_node_id(spec["nodes"], op)
    return {
        "id": node_id,
        "op": op,
        "params": {**specs.default_params(op), **specs.data_defaults(op, meta), **(params or {})},
        "inputs": [],
    }


def _placed(spec: dict, node_id: str, at) -> dict:
    if at is None:
        return spec
    return {**spec, "layout": {**(spec.get("layout") or {}), node_id: [float(at[0]), float(at[1])]}}


def add_node(spec: dict, op: str, meta: dict | None, at=None) -> tuple[dict, str]:
    """A new layer, not connected yet, placed at `at` (before the output in the list)."""
    node = _new_node(spec, op, meta)
    wires = {**wiring(spec), node["id"]: []}
    nodes = [dict(n) for n in spec["nodes"]]
    out = output_id(spec)
    nodes.insert(next(i for i, n in enumerate(nodes) if n["id"] == out), node)
    return _placed(rewire({**spec, "nodes": nodes}, wires), node["id"], at), node["id"]


def insert_on_edge(
    spec: dict, op: str, src: str, dst: str, meta: dict | None, params=None, at=None
) -> tuple[dict, str]:
    """A new layer on the edge src → dst: it reads `src` and `dst` reads it instead."""
    src = _same_input(spec).get(src, src)
    node = _new_node(spec, op, meta, params)
    wires = {**wiring(spec), node["id"]: [src]}
    nodes = [dict(n) for n in spec["nodes"]]
    nodes.insert(next(i for i, n in enumerate(nodes) if n["id"] == dst), node)
    new = {**spec, "nodes": nodes}
    wires[dst] = [node["id"] if s == src else s for s in wires[dst]]
    if at is None and spec.get("layout"):
        where = positions(spec, None)
        a, b = where.get(src), where.get(dst)
        at = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + NODE_H / 2] if a and b else None
    return _placed(rewire(new, wires), node["id"], at), node["id"]


def remove_nodes(spec: dict, ids: list[str]) -> dict:
    """Remove layers (at least one stays); each layer that read one reads its input instead."""
    for node_id in ids:
        if len(spec["nodes"]) > 1 and any(n["id"] == node_id for n in spec["nodes"]):
            spec = specs.remove_node(spec, node_id)
    return rewire(spec, wiring(spec))


def move(spec: dict, moved: dict) -> dict:
    """Nodes dragged to new places ({id: [x, y]})."""
    ids = {n["id"] for n in spec["nodes"]}
    layout = positions(spec, None)  # the others keep their places when the wiring changes later
    for node_id, (x, y) in moved.items():
        if node_id in ids or node_id == "input" or node_id.startswith(specs.INPUT_PREFIX):
            layout[node_id] = [round(float(x), 1), round(float(y), 1)]
    return {**spec, "layout": layout}


def _sources(spec: dict, meta: dict | None) -> list[str]:
    if meta is None:
        declared = list(spec.get("inputs") or {specs.FIRST_INPUT: {}})
        return [specs.input_ref(k, declared[0]) for k in declared]
    return list(specs.input_sources(spec, meta))


def auto_layout(spec: dict, meta: dict | None) -> dict[str, list[float]]:
    """Left to right by depth (the longest path from an input); within a column, in the order of the layers their
    inputs come from."""
    wires = wiring(spec)
    sources = _sources(spec, meta)
    depth = dict.fromkeys(sources, 0)
    order = [n["id"] for n in spec["nodes"]]
    for _ in range(
        len(order) + 1
    ):  # longest paths, relaxed until stable (a cycle stops at the bound)
        changed = False
        for nid in order:
            d = 1 + max((depth.get(s, 0) for s in wires[nid]), default=0)
            if depth.get(nid) != d:
                depth[nid], changed = d, True
        if not changed:
            break
    columns: dict[int, list[str]] = {}
    for nid in [*sources, *order]:
        columns.setdefault(depth[nid], []).append(nid)
    row: dict[str, float] = {}
    for d in sorted(columns):
        ids = columns[d]
        if d:
            ids.sort(key=lambda i: sum(row.get(s, 0) for s in wires[i]) / max(len(wires[i]), 1))
        for r, nid in enumerate(ids):
            row[nid] = r - (len(ids) - 1) / 2
    return {nid: [d * (NODE_W + GAP_X), row[nid] * (NODE_H + GAP_Y)] for nid, d in depth.items()}


def positions(spec: dict, meta: dict | None) -> dict[str, list[float]]:
    """Where each node and input is drawn: its saved place, else its place in the automatic layout."""
    return {**auto_layout(spec, meta), **(spec.get("layout") or {})}


SKIP_DX = 1.5 * NODE_W + GAP_X  # an edge longer than this jumps over a layer: it arcs above the row


def curve(a, b) -> tuple:
    """The cubic Bézier an edge is drawn as, from an output port `a` to an input port `b` (the canvas draws the
    same in canvas.js): horizontal at both ends, and lifted above the row when it skips over layers."""
    skip = b[0] - a[0] > SKIP_DX
    dx = (
        GAP_X if skip else max(40.0, abs(b[0] - a[0]) / 2)
    )  # a skip rises and falls in the gaps between layers
    lift = min(200.0, 60 + 0.15 * (b[0] - a[0])) if skip else 0.0
    return (a, (a[0] + dx, a[1] - lift), (b[0] - dx, b[1] - lift), b)


def board_height(drawn: dict) -> int:
    """The canvas's height in pixels: the graph's at its fitted zoom, between 300 and 560."""
    ys = [n["y"] for n in drawn["nodes"]]
    return int(min(560, max(300, (max(ys) - min(ys) + NODE_H) * 0.8 + 150)))


def shapes_of(spec: dict, meta: dict, infos) -> dict[str, tuple[int, ...]]:
    """Every input's and every analysed layer's output shape, by id (`infos`: `engine.compiler.analyse`'s)."""
    return {**specs.input_sources(spec, meta), **{i.id: tuple(i.output_shape) for i in infos}}


def shape_key(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def accepts(spec: dict, shapes: dict[str, tuple[int, ...]]) -> dict[str, list[str]]:
    """For each node, the output shapes (shape_key) a new connection into it could bring without a shape error:
    a one-input layer built on that shape, a merge on its other inputs' shapes plus that one."""
    wires = wiring(spec)
    candidates = {tuple(s) for s in shapes.values()}
    out = {}
    for n in spec["nodes"]:
        op = get_op(n["op"])
        if op is None:
            continue
        params = json.dumps(n.get("params", {}), sort_keys=True)
        if op.max_inputs == 1:
            have: list[tuple[int, ...]] = []
        else:
            have = [tuple(shapes[s]) for s in wires[n["id"]] if s in shapes]
            if len(have) < len(wires[n["id"]]) or len(have) >= op.max_inputs:
                have = []
        out[n["id"]] = [
            shape_key(s)
            for s in sorted(candidates)
            if (op.max_inputs > 1 and not have)
            or fits(n["op"], params, (*have, s) if op.max_inputs > 1 else (s,))
        ]
    return out


def _adapters(shape: tuple[int, ...], others: list[tuple[int, ...]]) -> list[tuple[str, str, dict]]:
    """Layers that could make `shape` fit where it goes: (label, op, params)."""
    found = []
    if len(shape) > 1:
        found.append(("Insert Flatten", "flatten", {}))
    if len(shape) == 3:
        found.append(("Insert a global average pool", "global_avgpool", {}))
    for width in sorted({o[-1] for o in others if len(o) == 1 and o != shape}):
        found.append(
            (f"Insert a Dense to match {width} features", "linear", {"out_features": width})
        )
    for o in others:  # a merge whose other inputs are wider: a Dense to their width after a Flatten
        if len(o) == 1 and len(shape) > 1:
            found.append(
                (f"Insert Flatten and a Dense to {o[-1]}", "linear", {"out_features": o[-1]})
            )
    return found


def fixes(spec: dict, meta: dict, node_id: str | None) -> list[dict]:
    """One-click fixes for the node whose inputs do not fit: a layer inserted on one of its input edges, kept only
    when the model then gets past that node. Each is {"label", "spec", "select"}."""
    if node_id is None or not any(n["id"] == node_id for n in spec["nodes"]):
        return []
    wires = wiring(spec)
    infos, _ = analyse(spec, specs.data_inputs(meta))
    shapes = shapes_of(spec, meta, infos)
    found, seen = [], set()
    for src in wires[node_id]:
        if src not in shapes:
            continue
        others = [tuple(shapes[s]) for s in wires[node_id] if s != src and s in shapes]
        for label, op, params in _adapters(tuple(shapes[src]), others):
            if label in seen:
                continue
            new, new_id = insert_on_edge(spec, op, src, node_id, meta, params)
            if label.startswith("Insert Flatten and"):
                new, _ = insert_on_edge(new, "flatten", src, new_id, meta)
            after, error = analyse(new, specs.data_inputs(meta))
            if error is None or (
                error.node_id not in (node_id, new_id) and node_id in {i.id for i in after}
            ):
                where = f" before '{node_id}'" + (
                    f" (on the edge from '{src}')" if len(wires[node_id]) > 1 else ""
                )
                found.append({"label": label + where, "spec": new, "select": new_id})
                seen.add(label)
        if len(found) >= 3:
            break
    return found[:3]


def unused(spec: dict) -> set[str]:
    """Layers whose output never reaches the model's output (they do not run)."""
    wires = wiring(spec)
    needed, stack = set(), [output_id(spec)]
    while stack:
        nid = stack.pop()
        if nid in wires and nid not in needed:
            needed.add(nid)
            stack.extend(wires[nid])
    return {n["id"] for n in spec["nodes"]} - needed


def apply(spec: dict, event: dict, meta: dict) -> tuple[dict, str | None] | None:
    """One canvas gesture ({"action": ...}) as (the new spec, the node to select); None for a gesture that names
    nodes or ops the spec does not have (a stale event from before a rerun)."""
    ids = {n["id"] for n in spec["nodes"]}
    sources = set(_sources(spec, meta)) | set(_same_input(spec))
    if not isinstance(event, dict):
        return None
    action, src, dst, op = (
        v if isinstance(v, str) else None for v in map(event.get, ("action", "src", "dst", "op"))
    )
    at = event.get("at")
    if at is not None and not (
        isinstance(at, list) and len(at) == 2 and all(isinstance(v, (int, float)) for v in at)
    ):
        at = None
    if at is not None and not all(math.isfinite(v) for v in at):
        at = None
    if action == "connect" and dst in ids and (src in ids | sources) and src != dst:
        if src in _descendants(wiring(spec), dst):
            return None  # it would make a cycle: the canvas does not offer it
        return connect(spec, src, dst), dst
    if action == "disconnect" and dst in ids and src in wiring(spec).get(dst, []):
        return disconnect(spec, src, dst), dst
    if action == "add" and op and get_op(op):
        return add_node(spec, op, meta, at)
    if action == "insert" and op and get_op(op) and dst in ids and src in wiring(spec)[dst]:
        return insert_on_edge(spec, op, src, dst, meta, at=at)
    if action == "remove" and isinstance(event.get("ids"), list):
        gone = [i for i in event["ids"] if isinstance(i, str) and i in ids]
        return (remove_nodes(spec, gone), None) if gone else None
    if action == "move" and isinstance(event.get("positions"), dict):
        moved = {
            k: v
            for k, v in event["positions"].items()
            if isinstance(v, list)
            and len(v) == 2
            and all(isinstance(c, (int, float)) and math.isfinite(c) for c in v)
        }
        return move(spec, moved), None
    if action == "layout":
        return {k: v for k, v in spec.items() if k != "layout"}, None
    return None


def graph(spec: dict, meta: dict, infos, error) -> dict:
    """The model as the canvas and the exported diagram draw it: {"nodes": [...], "edges": [...]}, one node per
    input and per layer, each with its place, title, key parameters, output shape, colour and what is wrong with
    it; each edge labelled with the shape it carries. `infos`, `error`: `engine.compiler.analyse` of the spec."""
    sources = specs.input_sources(spec, meta)
    parts = specs.data_parts(meta)
    shapes = shapes_of(spec, meta, infos)
    where = positions(spec, meta)
    wires, dead, out = wiring(spec), unused(spec), output_id(spec)
    nodes = []
    for ref, shape in sources.items():
        name = ref[len(specs.INPUT_PREFIX) :] if ref.startswith(specs.INPUT_PREFIX) else None
        part = parts.get(name) if name else next(iter(parts.values()), {})
        nodes.append(
            {
                "id": ref,
                "op": None,
                "title": ref,
                "detail": "token ids" if (part or {}).get("tokens") else "data",
                "shape": shape_key(shape),
                "shape_key": shape_key(shape),
                "color": "#64748B",
                "source": True,
                "x": where[ref][0],
                "y": where[ref][1],
            }
        )
    bad = error.node_id if error is not None else None
    ids = [n["id"] for n in spec["nodes"]]
    previous = dict(zip(ids, ["input", *ids[:-1]], strict=True))
    for n in spec["nodes"]:
        op = get_op(n["op"])
        shape = shapes.get(n["id"])
        nodes.append(
            {
                "id": n["id"],
                "op": n["op"],
                "title": op.title.split(" (")[0] if op else n["op"],
                "detail": node_detail(n) if op else "",
                "shape": shape_key(shape) if shape else ("error" if bad == n["id"] else "?"),
                "shape_key": shape_key(shape) if shape else None,
                "color": FAMILY_COLORS[op.family] if op else "#64748B",
                "source": False,
                "output": n["id"] == out,
                "error": error.message if bad == n["id"] else "",
                "warn": "Not used: its output never reaches the output layer."
                if n["id"] in dead
                else "",
                "doc": op.doc if op else "",
                "x": where[n["id"]][0],
                "y": where[n["id"]][1],
            }
        )
    drawn = {n["id"] for n in nodes}
    edges = [
        {
            "src": src,
            "dst": dst,
            "label": shape_key(shapes[src]) if src in shapes else "?",
            "skip": src != previous[dst],
        }
        for dst, ins in wires.items()
        for src in ins
        if src in drawn
    ]
    return {"nodes": nodes, "edges": edges}
