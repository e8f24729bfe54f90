"""Build: drag layers into a model, set each one up, see every shape, parameter count and finding."""

import hashlib
import json

import pandas as pd
import streamlit as st
from pydantic import ValidationError
from safetensors.torch import save_file

from engine import canvas, diagram
from engine import spec as specs
from engine.compiler import analyse, memory_estimate
from engine.data.builtin import BUILTINS
from engine.data.prepare import prepare_builtin
from engine.errors import LayerLabError, SpecError
from engine.gan import gan_train, starter_gan
from engine.linter import lint, lint_gan_part
from engine.receptive import receptive_fields
from engine.registry import FAMILIES, FAMILY_COLORS, get_op, ops
from engine.runs import ACTIVE, read_status, runs_dir
from engine.templates import TEMPLATES, build, starter_for, starter_reason, suits
from engine.transfer import match_weights, read_any_weights
from engine.workspace import home
from engine.xray import colours as xray_colours
from engine.xray import looks as diagnostics_of
from ui import state
from ui.canvas import model_canvas
from ui.common import page, show_error
from ui.forms import params_form, pending_params, reset_widgets
from ui.layout import split
from ui.run_view import LIVE_EVERY_S as LIVE_S
from ui.stack import layer_stack
from ui.xray import NONE, layer_detail, legend, signal_picker

PREVIOUS = "(previous layer)"
NOTHING = "(not connected)"

page(
    "Build",
    "Stack layers into a model: drag them in from the palette, click one to set it up. "
    "Shapes, parameter counts and advice update on every edit.",
)
meta = state.dataset_meta()
spec = state.spec()
train = state.train_settings()
selected = st.session_state.get(state.SELECTED)
node_ids = [n["id"] for n in spec["nodes"]]
if selected not in node_ids:
    selected = None


def commit(new_spec: dict, select: str | None = None, whole: bool = False) -> None:
    if whole:  # a new model: the canvas fits it in view
        st.session_state["build.fit"] = st.session_state.get("build.fit", 0) + 1
    state.set_spec(new_spec, whole)
    st.session_state[state.SELECTED] = select
    st.rerun()


# Edits made in the selected layer's form arrive as widget values before anything is drawn:
# apply them first so the stack, diagram and summary below show the edited model.
if selected:
    node = next(n for n in spec["nodes"] if n["id"] == selected)
    edited = pending_params(get_op(node["op"]), selected, node["params"])
    if edited != node["params"]:
        try:
            edited = get_op(node["op"]).params.model_validate(edited).model_dump(mode="json")
            spec = specs.set_params(spec, selected, edited)
            state.set_spec(spec)
        except ValidationError as e:
            st.error(f"Layer '{selected}': {e.errors()[0]['msg']}.")

if st.session_state.get(state.SPEC_IS_STARTER):
    st.caption(
        f":material/lightbulb: The starter model for {starter_reason(meta)} Start from a template below "
        "for more."
    )
# Folded: open, it would push the model below the fold on a laptop screen; its label says what it holds.
with st.expander(
    f":material/auto_awesome: Start from a template ({len(TEMPLATES) + 1} ready-made models)"
):
    cols = st.columns(4)
    for i, t in enumerate(TEMPLATES.values()):
        with cols[i % 4].container(border=True):
            st.markdown(f"**{t.title}**")
            st.caption(t.description)
            fits = suits(t, meta)
            if st.button(
                "Use" if fits else f"Use with {BUILTINS[t.dataset].title.split(' (')[0]}",
                key=f"template.{t.name}",
                width="stretch",
                help=None
                if fits
                else f"Needs other data: switches to the built-in '{t.dataset}' set.",
            ):
                if not fits:
                    with st.spinner("Preparing its dataset…"):
                        meta = prepare_builtin(t.dataset, n_samples=2000, noise=0.05).meta
                    state.use_dataset(meta)
                reset_widgets()
                state.set_train({**(st.session_state.get(state.TRAIN) or {}), **t.train})
                state.notice(
                    f"Loaded the {t.title} template for '{meta['name']}'. Its training settings are set on "
                    "the Train page."
                )
                commit(build(t, meta), whole=True)
    with cols[len(TEMPLATES) % 4].container(border=True):
        st.markdown("**GAN**")
        st.caption(
            "A generator that turns random noise into samples and a discriminator that tells them from the data, "
            "trained against each other. For images and for points (try the ring of Gaussians)."
        )
        if st.button("Use", key="template.gan", width="stretch"):
            reset_widgets()
            state.set_train({**(st.session_state.get(state.TRAIN) or {}), **gan_train(meta)})
            state.notice(
                f"Loaded a GAN for '{meta['name']}': edit its generator or its discriminator below."
            )
            commit(starter_gan(meta), whole=True)

part = state.gan_part()
if part:  # a GAN: pick the network to edit; both shapes, joined
    whole = state.whole_spec()
    g1, g2 = st.columns([2, 1])
    g1.segmented_control(
        "Network",
        ["generator", "discriminator"],
        default=part,
        key="build.gan_part",
        format_func=str.capitalize,
        on_change=lambda: (
            state.set_gan_part(st.session_state["build.gan_part"] or part),
            st.session_state.update({state.SELECTED: None}),
        ),
        help="A GAN is two models: edit each here. The generator turns noise into a sample; the discriminator "
        "scores a sample (one logit: real or generated).",
    )
    noise = g2.number_input(
        "Noise size", 1, 1024, int(whole["noise"]), key="build.noise",
        help="How many random numbers from N(0, 1) the generator turns into a sample.",
    )  # fmt: skip
    if noise != whole["noise"]:
        commit({**whole, "noise": int(noise)}, whole=True)
    st.caption(
        f"noise {(whole['noise'],)} → **generator** → sample {tuple(meta['input_shape'])} → **discriminator** → "
        "1 logit (real or generated)"
    )

seen = state.edited_meta(meta)  # what the edited model reads: the data, or a GAN generator's noise
infos, error = analyse(spec, specs.data_inputs(seen))
sources = specs.input_sources(
    spec, seen
)  # what a layer can read: "input" (and "input:review", …) with shapes
shape_of = {i.id: i for i in infos}
# A GAN's networks have mistakes of their own; their shapes are checked as a pair when the run is created.
findings = lint_gan_part(part, spec, meta) if part else lint(spec, meta, train, (infos, error))
explicit = {n["id"]: n.get("inputs") for n in spec["nodes"]}
drawn = canvas.graph(spec, seen, infos, error)
advice = {
    f.node_id: f.message for f in findings
}  # the linter's, amber on the canvas and in the outline
for n in drawn["nodes"]:
    n["warn"] = n.get("warn") or advice.get(n["id"], "")
palette = [
    {"op": o.name, "title": o.title, "family": o.family, "doc": o.doc, "color": FAMILY_COLORS[fam]}
    for fam in FAMILIES
    for o in ops().values()
    if o.family == fam
]
stack_nodes = [
    {
        **n,
        "selected": n["id"] == selected,
        "inputs": ", ".join(explicit[n["id"]]) if explicit[n["id"]] else "",
    }
    for n in drawn["nodes"]
    if not n["source"]
]


def add_position() -> int:
    """Where Add puts a layer: after the selected one, else before the output."""
    return node_ids.index(selected) + 1 if selected in node_ids else max(len(node_ids) - 1, 0)


# One-click fixes for a layer whose shapes do not fit, less those the linter's advice below already offers.
taken = {f.fix_label for f in findings if error is not None and f.node_id == error.node_id}
fixes = [
    f
    for f in (canvas.fixes(spec, seen, error.node_id) if error is not None else [])
    if not any(f["label"].startswith(label) for label in taken)
]
accepts = canvas.accepts(spec, canvas.shapes_of(spec, seen, infos))  # once, not on each live redraw
open_run = st.session_state.get(state.RUN)
run_dir = runs_dir() / open_run if open_run else None
looks = diagnostics_of(run_dir) if run_dir and run_dir.exists() else []
live = False
with split("build"):
    left, right = st.columns([5, 2], gap="medium")  # the canvas first: a graph is wide
with left:
    if looks:  # the training X-ray: colour the layers by what the open run saw
        signal = signal_picker("build.xray", st.columns([1, 2])[0], allow_none=True)
        live = bool(signal) and read_status(run_dir).get("state") in ACTIVE
    else:
        signal = None

    @st.fragment(run_every=LIVE_S if live else None)
    def model_graph() -> None:
        """The canvas, coloured by family or, with the X-ray on, by the open run's latest diagnostics (redrawn
        while the run trains)."""
        seen_now = (diagnostics_of(run_dir) if live else looks) if signal else []  # one read a draw
        latest = (seen_now or [None])[-1]
        paint = xray_colours(latest, signal) if latest else {}
        nodes = [
            {
                **n,
                "selected": n["id"] == selected,
                "paint": paint.get(n["id"], NONE) if signal and not n["source"] else None,
                "accepts": accepts.get(n["id"], []),
                "fixes": [f["label"] for f in fixes] if n.get("error") else [],
            }
            for n in drawn["nodes"]
        ]
        # Fitted again for a new model, and while the layout is automatic (it moves every node); not when the
        # first move saves the layout.
        if not spec.get("layout"):
            st.session_state["build.auto_shape"] = len(drawn["edges"]) + 1000 * len(node_ids)
        fit_token = (
            f"{state.gan_part()}:{st.session_state.get('build.fit', 0)}:"
            f"{st.session_state.get('build.auto_shape')}"
        )
        event = model_canvas(
            {
                "palette": palette,
                "nodes": nodes,
                "edges": drawn["edges"],
                "height": canvas.board_height(drawn),
                "node_w": canvas.NODE_W,
                "port_y": canvas.PORT_Y,
                "skip_dx": canvas.SKIP_DX,
                "gap_x": canvas.GAP_X,
                "can_undo": state.can_undo(),
                "can_redo": state.can_redo(),
                "fit_token": fit_token,
                "view_key": f"{state.session_id()}:{state.gan_part()}",
            },
            key="canvas",
        )
        action = (event or {}).get("action")
        if action in ("undo", "redo"):
            (state.undo if action == "undo" else state.redo)()
            st.session_state[state.SELECTED] = None
            st.rerun()
        elif action == "select" and event.get("id") in node_ids:
            st.session_state[state.SELECTED] = event["id"]
            st.rerun()
        elif (
            action == "fix"
            and type(event.get("index")) is int
            and event["index"] in range(len(fixes))
        ):
            fix = fixes[event["index"]]
            commit(fix["spec"], fix["select"])
        elif event:
            done = canvas.apply(spec, event, seen)
            if done:
                if action == "layout":
                    st.session_state["build.fit"] = st.session_state.get("build.fit", 0) + 1
                commit(*done)
        if latest:
            legend(latest, signal)
        if signal:  # the X-ray's detail for the layer clicked (selected) on the canvas
            if selected in [layer["id"] for layer in looks[-1]["layers"]]:
                with st.expander(f"X-ray of '{selected}': histograms and history", expanded=True):
                    layer_detail(seen_now, selected, "build.xray_detail")
            else:
                st.caption(
                    "Click a layer on the canvas to see its histograms and each signal's history."
                )

    model_graph()
    d1, d2, _ = st.columns([1, 1, 2])
    for column, kind, draw in ((d1, "svg", diagram.svg), (d2, "png", diagram.png)):
        column.download_button(
            f"Diagram ({kind.upper()})",
            lambda draw=draw: draw(spec, seen),  # drawn on the click, not on every edit
            file_name=f"model.{kind}",
            mime="image/svg+xml" if kind == "svg" else "image/png",
            icon=":material/download:",
            on_click="ignore",
            width="stretch",
            help="The architecture as a picture for a report or a slide: each layer with its shape.",
        )
    if error:
        st.error(str(error), icon=":material/error:")
        for i, fix in enumerate(fixes):
            if st.button(fix["label"], key=f"shape_fix.{i}", icon=":material/build:"):
                commit(fix["spec"], fix["select"])
    for f in findings:
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.warning(f.message, icon=":material/lightbulb:")
        if c2.button(f.fix_label, key=f"fix.{f.rule}.{f.node_id}", width="stretch"):
            new_spec, new_train = f.fix(spec, train)
            state.set_train(new_train)
            st.session_state.pop("train.loss", None)
            commit(
                new_spec, f.node_id if f.node_id in [n["id"] for n in new_spec["nodes"]] else None
            )

with right:
    st.subheader("Layer settings")
    choice = st.selectbox(
        "Layer",
        [None, *node_ids],
        index=([None, *node_ids].index(selected)),
        format_func=lambda i: (
            "Choose a layer…"
            if i is None
            else f"{i} · {get_op(next(n for n in spec['nodes'] if n['id'] == i)['op']).title}"
        ),
        help="Or click a layer on the canvas or in the outline.",
    )
    if choice != selected:
        st.session_state[state.SELECTED] = choice
        st.rerun()
    if selected:
        node = next(n for n in spec["nodes"] if n["id"] == selected)
        op = get_op(node["op"])
        st.caption(op.doc)
        others = list(sources) + [i for i in node_ids if i != selected]
        if op.max_inputs > 1:
            current = node.get("inputs") or []
            chosen = st.multiselect(
                "Inputs",
                others,
                default=[c for c in current if c in others],
                key=f"inputs.{selected}",
                help="The layers whose outputs this one merges "
                "(a skip connection names an earlier layer).",
            )
            if chosen != current:
                commit(specs.set_inputs(spec, selected, chosen), selected)
        else:
            current = (node.get("inputs") or [PREVIOUS])[0]
            choices = (
                [PREVIOUS, *others] if node.get("inputs") != [] else [NOTHING, PREVIOUS, *others]
            )
            current = NOTHING if node.get("inputs") == [] else current
            pick = st.selectbox(
                "Input from",
                choices,
                index=choices.index(current) if current in choices else 0,
                key=f"input.{selected}",
                help="Normally the layer above; pick another to start a branch.",
            )
            if pick != current and pick != NOTHING:
                commit(
                    specs.set_inputs(spec, selected, None if pick == PREVIOUS else [pick]), selected
                )
        params_form(op, selected, node["params"])
        i = node_ids.index(selected)
        b1, b2, b3 = st.columns(3)
        if b1.button("Up", icon=":material/arrow_upward:", disabled=i == 0, width="stretch"):
            commit(specs.move_node(spec, selected, i - 1), selected)
        if b2.button(
            "Down",
            icon=":material/arrow_downward:",
            disabled=i == len(node_ids) - 1,
            width="stretch",
        ):
            commit(specs.move_node(spec, selected, i + 1), selected)
        if b3.button(
            "Delete", icon=":material/delete:", disabled=len(node_ids) == 1, width="stretch"
        ):
            commit(specs.remove_node(spec, selected))
    with st.container(border=True):
        new_op = st.selectbox(
            "Add a layer",
            [p["op"] for p in palette],
            format_func=lambda o: get_op(o).title,
            help="Added after the selected layer (or before the output layer).",
        )
        if st.button("Add", icon=":material/add:", width="stretch"):
            new_spec, new_id = specs.insert_node(spec, new_op, add_position(), seen)
            commit(new_spec, new_id)
    # The outline: the same model as a list, in the order it runs (drag to reorder, click to edit).
    event = layer_stack(
        stack_nodes,
        " · ".join(f"{ref} {shape}" for ref, shape in sources.items()),
        key="stack",
    )
    if event:
        action = event.get("action")
        if action == "insert" and get_op(event.get("op", "")):
            index = event.get("index")
            new_spec, new_id = specs.insert_node(
                spec, event["op"], add_position() if index is None else index, seen
            )
            commit(new_spec, new_id)
        elif action == "move" and event.get("id") in node_ids:
            index = event["index"]
            old = node_ids.index(event["id"])
            commit(
                specs.move_node(spec, event["id"], index - 1 if index > old else index), event["id"]
            )
        elif action == "select" and event.get("id") in node_ids:
            st.session_state[state.SELECTED] = event["id"]
            st.rerun()

st.subheader("Summary")
rows = [
    {
        "layer": n["id"],
        "op": n["op"],
        "inputs": n["inputs"] or "previous",
        "output shape": n["shape"],
        "parameters": shape_of[n["id"]].params if n["id"] in shape_of else None,
        "multiply-adds": shape_of[n["id"]].macs if n["id"] in shape_of else None,
    }
    for n in stack_nodes
]
try:
    fields = receptive_fields(spec, state.edited_meta(meta))
except (SpecError, ValidationError):  # a graph that does not parse: its error is shown above
    fields = {"layers": [], "warnings": []}
if fields[
    "layers"
]:  # convolution and pooling layers: their size and what one position of them sees
    seen = {f["id"]: f for f in fields["layers"]}
    for row in rows:
        f = seen.get(row["layer"])
        row["spatial size"] = "×".join(map(str, f["size"])) if f and f["size"] else ""
        row["receptive field"] = (
            f"{f['field']} px" + (" (all)" if f["field"] >= fields["input"] else "") if f else ""
        )
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    width="stretch",
    column_config={
        "receptive field": st.column_config.TextColumn(
            help="How many input pixels (or steps) across one position of this layer sees: it grows with each "
            "kernel, and faster after each stride or pooling."
        )
    },
)
for warning in fields["warnings"]:
    st.warning(warning, icon=":material/center_focus_weak:")
memory = memory_estimate(infos, int(train["batch_size"]), train["optimizer"])
m1, m2, m3, m4 = st.columns(4)
m1.metric("Layers", len(spec["nodes"]))
m2.metric("Parameters", f"{sum(i.params for i in infos):,}")
m3.metric("Multiply-adds / sample", f"{sum(i.macs for i in infos):,}")
m4.metric(
    f"Training memory (batch {train['batch_size']})",
    f"{memory['total'] / 2**20:,.2f} MB",
    help=" · ".join(f"{k}: {v / 2**20:,.2f} MB" for k, v in memory.items() if k != "total"),
)

st.subheader("Save and load")
s1, s2, s3 = st.columns([1, 2, 1], vertical_alignment="bottom")
try:
    spec_text = specs.parse_spec(spec).to_json()
    s1.download_button(
        "Download spec JSON",
        spec_text,
        file_name="model_spec.json",
        mime="application/json",
        icon=":material/download:",
        on_click="ignore",
        width="stretch",
    )
except SpecError:
    s1.button("Download spec JSON", disabled=True, help="Fix the model first.", width="stretch")
upload = s2.file_uploader("Load a spec JSON", type=["json"], key="build.spec_upload")
if upload is not None and st.session_state.get("build.loaded") != upload.file_id:
    st.session_state["build.loaded"] = upload.file_id
    try:
        loaded = specs.parse_spec(upload.getvalue()).to_dict()
        loaded["inputs"] = {
            k: {**v, "shape": None} for k, v in loaded["inputs"].items()
        }  # the data's shapes
        reset_widgets()
        state.notice(f"Loaded {len(loaded['nodes'])} layers from {upload.name}.")
        commit(loaded, whole=True)
    except (SpecError, UnicodeDecodeError, json.JSONDecodeError) as e:
        show_error(
            e if isinstance(e, SpecError) else SpecError(None, "the file is not a JSON spec.")
        )
if s3.button("Reset to starter model", icon=":material/restart_alt:", width="stretch"):
    reset_widgets()
    state.set_spec(starter_for(meta), whole=True)
    st.session_state[state.SPEC_IS_STARTER] = True
    state.save()
    st.session_state[state.SELECTED] = None
    st.rerun()

st.subheader("Start from saved weights")
st.caption(
    "Transfer learning: load a .safetensors file (from LayerLab or with `layers.<node id>.<tensor>` names), "
    "a LayerLab bundle (.zip) or a .pt state_dict into this model. Tensors are matched by layer id and shape; "
    "the next run on the Train page starts from them, and can freeze the loaded layers there."
)
weights = st.file_uploader("Weights", type=["safetensors", "zip", "pt", "pth"], key="build.weights")
if weights is not None and st.session_state.get("build.weights_loaded") != weights.file_id:
    st.session_state["build.weights_loaded"] = weights.file_id
    try:
        report = match_weights(
            spec, specs.data_inputs(seen), read_any_weights(weights.getvalue(), weights.name)
        )
        path = (
            home()
            / "imports"
            / f"{hashlib.sha256(weights.getvalue()).hexdigest()[:12]}.safetensors"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in report["state"].items()}, str(path))
        state.set_init(
            {
                "path": str(path),
                "name": weights.name,
                "loaded": report["loaded"],
                "skipped": report["skipped"],
                "missing": report["missing"],
            }
        )
    except (LayerLabError, SpecError) as e:
        show_error(e)
imported = st.session_state.get(state.INIT)
if imported:
    i1, i2, i3, i4 = st.columns([1, 1, 1, 1.2], vertical_alignment="bottom")
    i1.metric("Loaded tensors", len(imported["loaded"]))
    i2.metric(
        "Skipped",
        len(imported["skipped"]),
        help="In the file, but no layer of this model has that id and shape.",
    )
    i3.metric(
        "Left fresh", len(imported["missing"]), help="This model's tensors the file did not fill."
    )
    if i4.button("Don't start from these weights", icon=":material/close:", width="stretch"):
        state.set_init(None)
        st.rerun()
    rows = (
        [{"tensor": n, "result": "loaded"} for n in imported["loaded"]]
        + [{"tensor": n, "result": f"skipped: {why}"} for n, why in imported["skipped"]]
        + [{"tensor": n, "result": "left fresh"} for n in imported["missing"]]
    )
    with st.expander(f"Match report for {imported['name']}", expanded=not imported["loaded"]):
        st.dataframe(rows, hide_index=True, width="stretch")
