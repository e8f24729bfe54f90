"""Why the model said what it said (Evaluate page): attributions for one row, image or text of the split, and the
ranking of a table's columns by permutation importance. Each runs as a job of its own (engine.jobs)."""

import hashlib
import html
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from engine import explain, jobs
from engine.compiler import analyse
from engine.data.store import Dataset
from engine.workspace import read_json
from ui.charts import COLORS, layout
from ui.progress import job_view

EXPLAIN = "evaluate.explain_job"
PREDICTION = "predict.explain_job"
RANKING = "evaluate.ranking_job"
HELP = {
    "integrated_gradients": "How much each input moved the score from a baseline (a black image, an average "
    "training row, or padding for text) to this input. The parts add up to that change: trust it most.",
    "saliency": "How sharply the score reacts to a small change of each input (the gradient's size). Quick, "
    "but noisy and blind to inputs the model is already sure about.",
    "smoothgrad": "Saliency averaged over 20 noisy copies of the input: less speckle, the same idea.",
    "gradcam": "Where in the image a convolution layer's features pushed this class up: coarse (the layer's "
    "resolution), but the clearest view of where the model looked.",
}


def _methods(what: str, has_conv: bool) -> list[str]:
    if what == "image":
        return ["gradcam", "integrated_gradients", "smoothgrad", "saliency"] if has_conv else [
            "integrated_gradients", "smoothgrad", "saliency"]  # fmt: skip
    if what == "text":
        return ["integrated_gradients", "saliency"]
    return ["integrated_gradients", "saliency", "smoothgrad"]


def explain_section(run_dir: Path, dataset: Dataset, split: str) -> None:
    meta = dataset.meta
    if meta.get("task") not in ("classification", "regression"):
        return
    st.subheader("Why: explanations")
    what = explain.kind(meta)
    tabs = (["One row", "Rank the columns"] if what == "table" else ["Rank the columns"] if what == "mixed"
            else ["One image" if what == "image" else "One text"])  # fmt: skip
    spec = read_json(run_dir / "spec.json") or {}
    if any(n.get("op") in ("attention", "transformer_encoder") for n in spec.get("nodes", [])):
        tabs.append("Attention")
    views = {"Rank the columns": _ranking, "Attention": _attention}
    for tab, name in zip(st.tabs(tabs, key="evaluate.explain_tabs"), tabs, strict=True):
        with tab:
            views.get(name, _one)(run_dir, dataset, split, what)


@st.cache_resource(max_entries=2, show_spinner=False)
def _model(path: str, weights_mtime: float):
    return explain.run_parts(Path(path))[0]


def _attention(run_dir: Path, dataset: Dataset, split: str, what: str) -> None:
    """One input's attention weights: for a chosen layer and head, how much each step (a token) looks at each
    other."""
    n = dataset.meta["sizes"][split]
    c1, c2, c3 = st.columns(3)
    row = c1.number_input(
        f"Row of the {split} split", 0, max(n - 1, 0), 0, key="evaluate.attention_row"
    )
    model = _model(str(run_dir), (run_dir / "model.safetensors").stat().st_mtime)
    found = explain.attention_maps(
        model, dataset.meta, dataset.split(split)[0][int(row) : int(row) + 1]
    )
    names = [layer["name"] for layer in found["layers"]]
    pick = c2.selectbox("Attention layer", range(len(names)), format_func=names.__getitem__,
                        key="evaluate.attention_layer")  # fmt: skip
    weights = found["layers"][pick]["weights"]
    head = c3.selectbox("Head", range(len(weights)), format_func=lambda h: f"head {h + 1}",
                        key="evaluate.attention_head")  # fmt: skip
    steps = found["steps"] or [str(i) for i in range(len(weights[head]))]
    labels = [f"{i}: {w}" for i, w in enumerate(steps)]  # unique, though a word repeats
    fig = go.Figure(go.Heatmap(z=weights[head], x=labels, y=labels, colorscale="Blues", zmin=0,
                               hovertemplate="%{y} looks at %{x}: %{z:.2f}<extra></extra>"))  # fmt: skip
    fig.update_yaxes(autorange="reversed", title="each step (query)")
    fig.update_xaxes(title="looks at (key)")
    st.plotly_chart(layout(fig, f"{names[pick]}, head {head + 1}", height=max(320, 16 * len(labels) + 120)),
                    width="stretch", key="evaluate.attention_map")  # fmt: skip
    st.caption("Each row is one step (a token) and shows how its attention is shared over the steps it looks at "
               "(each row adds up to 1). Attention shows where information flows, not why the model decided: "
               "read it beside Integrated Gradients.")  # fmt: skip


def _convs(run_dir: Path, meta: dict) -> list[str]:
    from engine.spec import data_inputs

    spec = read_json(run_dir / "spec.json") or {}
    infos, _ = analyse(spec, data_inputs(meta)) if spec else ([], None)
    return [i.id for i in infos if i.op == "conv2d"]


def _one(run_dir: Path, dataset: Dataset, split: str, what: str) -> None:
    meta = dataset.meta
    n = dataset.meta["sizes"][split]
    convs = _convs(run_dir, meta) if what == "image" else []
    methods = _methods(what, bool(convs))
    c1, c2, c3 = st.columns([1, 1.3, 1.3])
    row = c1.number_input(
        f"Row of the {split} split", 0, max(n - 1, 0), 0, key="evaluate.explain_row"
    )
    method = c2.selectbox("Method", methods, format_func=explain.TITLES.get, key="evaluate.explain_method",
                          help="\n".join(f"- **{explain.TITLES[m]}**: {HELP[m]}" for m in methods))  # fmt: skip
    classes = [str(c) for c in meta.get("classes") or []]
    target = c3.selectbox("Explain the class", [None, *range(len(classes))], key="evaluate.explain_class",
                          format_func=lambda c: "the predicted one" if c is None else classes[c],
                          disabled=not classes)  # fmt: skip
    layer = None
    if method == "gradcam":
        layer = st.selectbox("Convolution layer", convs, index=len(convs) - 1, key="evaluate.explain_layer",
                             help="The last one sees the most (its features are the most abstract), at the "
                             "coarsest resolution.")  # fmt: skip
    asked = {"run_dir": str(run_dir), "method": method, "split": split, "rows": [int(row)], "target": target,
             "layer": layer}  # fmt: skip
    if st.button("Explain", icon=":material/visibility:", key="evaluate.explain", type="primary"):
        folder = jobs.start("explain", asked)
        st.session_state[EXPLAIN] = str(folder)
        st.session_state[EXPLAIN + ".asked"] = asked
    if st.session_state.get(EXPLAIN + ".asked") != asked:
        st.caption(HELP[method])
        return
    result = job_view(EXPLAIN, f"{explain.TITLES[method]}")
    if result is None:
        return
    shown = result["rows"][0]
    score = f"score {shown['score']:.3g}" if classes else f"output {shown['score']:.3g}"
    st.caption(
        f"Explaining **{shown['target']}** ({score}) for row {row} of the {split} split. {HELP[method]}"
    )
    x = dataset.split(split)[0][int(row)]
    if what == "image":
        img = x.float() / 255 if x.dtype == torch.uint8 else x
        img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
        a, b = st.columns(2)
        a.image(img.clamp(0, 1).numpy(), caption="the image", width=224)
        b.image(result["images"][0], caption=f"{explain.TITLES[method]}" + (
            f" at {result['layer']}" if result.get("layer") else ""), width=224)  # fmt: skip
    elif what == "text":
        st.html(colored_tokens(shown["tokens"]))
        st.caption(
            "Green words pushed the score up, red ones down; the stronger the colour, the more."
        )
    else:
        st.plotly_chart(columns_figure(shown["columns"], f"What moved the score (row {row})"),
                        width="stretch", key="evaluate.explain_columns")  # fmt: skip
        if result["delta"] is not None:
            st.caption(f"The bars add up to the score's change from an average training row (gap "
                       f"{result['delta']:.2g}: Integrated Gradients' completeness).")  # fmt: skip


def colored_tokens(pairs: list) -> str:
    """Words on a background whose colour and strength follow their attribution (green up, red down)."""
    top = max((abs(v) for _, v in pairs), default=0.0) or 1.0
    spans = []
    for word, value in pairs:
        strength = min(abs(value) / top, 1.0) * 0.75
        rgb = "34,160,90" if value >= 0 else "220,60,60"
        spans.append(f'<span title="{value:+.3g}" style="background: rgba({rgb},{strength:.2f}); '
                     f'padding: 1px 3px; border-radius: 3px">{html.escape(str(word))}</span>')  # fmt: skip
    return f'<div style="line-height: 2; font-size: 1.05rem">{" ".join(spans)}</div>'


def columns_figure(values: dict, title: str) -> go.Figure:
    items = sorted(values.items(), key=lambda kv: abs(kv[1]))[-20:]
    names, v = [k for k, _ in items], np.array([x for _, x in items])
    fig = go.Figure(go.Bar(x=v, y=names, orientation="h",
                           marker_color=[COLORS[2] if x >= 0 else COLORS[1] for x in v]))  # fmt: skip
    fig.update_xaxes(title="attribution (+ pushes the score up)")
    return layout(fig, title, height=max(220, 28 * len(names) + 80))


def _ranking(run_dir: Path, dataset: Dataset, split: str, what: str) -> None:
    asked = {"run_dir": str(run_dir), "method": "permutation", "split": split}
    if st.button("Rank the columns", icon=":material/leaderboard:", key="evaluate.rank",
                 help=f"Shuffles one column at a time among the {split} split's rows ({explain.PERMUTATION_REPEATS} "
                 "times each) and measures how much the model's score drops: the columns it relies on most "
                 "drop it most."):  # fmt: skip
        st.session_state[RANKING] = str(jobs.start("explain", asked))
        st.session_state[RANKING + ".asked"] = asked
    if st.session_state.get(RANKING + ".asked") != asked:
        return
    result = job_view(RANKING, "Shuffling the columns")
    if result is None:
        return
    items = list(result["importances"].items())[:25][::-1]
    fig = go.Figure(go.Bar(x=[s["mean"] for _, s in items], y=[c for c, _ in items], orientation="h",
                           error_x=dict(type="data", array=[s["std"] for _, s in items]),
                           marker_color=COLORS[0]))  # fmt: skip
    fig.update_xaxes(title=f"{result['metric']} lost when the column is shuffled")
    st.plotly_chart(layout(fig, "Permutation importance", height=max(220, 28 * len(items) + 80)),
                    width="stretch", key="evaluate.ranking")  # fmt: skip
    st.caption(
        f"Over {result['rows']:,} rows; the bars are the mean of {result['repeats']} shuffles and the whiskers their "
        f"spread. With nothing shuffled, the {result['metric']} is {result['baseline']:.3g}. A column near 0 is "
        "one the model ignores, or one whose information another column also carries (shuffling one of two twins "
        "costs little)."
    )


# ---- Predict page: why the model said what it said about a new row or image


def explain_prediction(meta: dict, model, x: torch.Tensor, labels: list[str], dataset: Dataset | None,
                       weights: str | tuple[str, bytes]) -> None:  # fmt: skip
    """Under the predictions, when switched on: pick one, a method, and see why (a job of its own). `x`: the
    predicted rows or images as the model takes them; `labels`: what the user calls each (a row number, a file
    name); `weights`: the model's path, or an uploaded file's (name, bytes)."""
    import io

    what = explain.kind(meta)
    if (
        meta.get("task") not in ("classification", "regression")
        or what in ("mixed", "series")
        or not len(x)
    ):
        return
    if not st.toggle("Explain a prediction", key="predict.explain",
                     help="Why the model said what it did about one of these: which pixels, words or columns "
                     "moved its score."):  # fmt: skip
        return
    with st.container(border=True):
        has_conv = bool(explain.conv_layers(model)) if what == "image" else False
        c1, c2 = st.columns(2)
        pick = c1.selectbox("Prediction", range(len(labels)), format_func=lambda i: labels[i],
                            key="predict.explain_pick")  # fmt: skip
        methods = _methods(what, has_conv)
        method = c2.selectbox("Method", methods, format_func=explain.TITLES.get, key="predict.explain_method",
                              help="\n".join(f"- **{explain.TITLES[m]}**: {HELP[m]}" for m in methods))  # fmt: skip
        one = x[pick : pick + 1].numpy()
        asked = {"method": method, "pick": labels[pick], "inputs": hashlib.sha1(one.tobytes()).hexdigest(),
                 "weights": weights if isinstance(weights, str) else weights[0]}  # fmt: skip
        if st.session_state.get(PREDICTION + ".asked") != asked:
            buf = io.BytesIO()
            np.save(buf, one, allow_pickle=False)
            files = {"inputs.npy": buf.getvalue()}
            job = {"method": method, "inputs": "inputs.npy",
                   "dataset_dir": str(dataset.path) if dataset is not None else None}  # fmt: skip
            if isinstance(weights, str):
                job["weights"] = weights
            else:
                job["weights"] = Path(weights[0]).name
                files[Path(weights[0]).name] = weights[1]
            st.session_state[PREDICTION] = str(jobs.start("explain", job, files))
            st.session_state[PREDICTION + ".asked"] = asked
        found = job_view(PREDICTION, explain.TITLES[method])
        if found is None:
            return
        shown = found["rows"][0]
        st.caption(f"Explaining **{shown['target']}** for {labels[pick]}. {HELP[method]}")
        if what == "image":
            at = f" at {found['layer']}" if found.get("layer") else ""
            st.image(found["images"][0], width=224, caption=explain.TITLES[method] + at)
        elif what == "text":
            st.html(colored_tokens(shown["tokens"]))
        else:
            st.plotly_chart(columns_figure(shown["columns"], "What moved the score"), width="stretch",
                            key="predict.explain_columns")  # fmt: skip
            if dataset is None:
                st.caption("Against a row of all zeros (this model's training data is not here): for scaled "
                           "numbers that is their average.")  # fmt: skip
