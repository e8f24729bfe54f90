"""Tune: search the training settings and the model's layer settings with Optuna; each trial is a run."""

from pathlib import Path

import streamlit as st

from engine import search
from engine.data.store import load_dataset
from engine.errors import LayerLabError
from engine.limits import CORES
from engine.scheduler import gpu_count
from ui import state
from ui.common import page, show_error
from ui.layout import split
from ui.tune_views import study_actions, study_view

STUDY = "tune.study"  # the study this session shows (a folder name under the workspace's studies/)

page(
    "Tune",
    "Search learning rates, batch sizes, layer widths and more: each trial is an ordinary run (in the run "
    "list, ready to evaluate and export), and weak trials are stopped early.",
)
meta = state.dataset_meta()
spec, train = state.whole_spec(), state.train_settings()
knobs = search.tunable(spec, train, meta)

with split("tune"):
    form, view = st.columns([1.1, 2], gap="large")
with form:
    st.markdown("**A new search**")
    name = st.text_input("Name", value=f"{meta['name']} search", key="tune.name", max_chars=80)
    first = ["lr"] + [k for k in knobs if "." in k][:1]
    chosen = st.multiselect(
        "Settings to search",
        list(knobs),
        default=[k for k in first if k in knobs],
        format_func=lambda k: knobs[k]["title"],
        key="tune.settings",
        help="Training options from the Train page, and the settings of this model's layers (Build page).",
    )
    space = {}
    for key in chosen:
        knob = knobs[key]
        default = knob["default"]
        if "choices" in default:
            options = list(dict.fromkeys([*(knob["options"] or default["choices"]), knob["value"]]))
            space[key] = {
                "choices": st.multiselect(
                    knob["title"], options, default=default["choices"], key=f"tune.choices.{key}"
                )
            }
            continue
        whole = isinstance(default["low"], int) and isinstance(default["high"], int)
        st.markdown(f"**{knob['title']}** (now {knob['value']})")
        c1, c2, c3 = st.columns([1, 1, 0.7], vertical_alignment="bottom")
        kind = dict(step=1) if whole else dict(format="%g", step=None)
        low = c1.number_input("from", value=default["low"], key=f"tune.low.{key}", **kind)
        high = c2.number_input("to", value=default["high"], key=f"tune.high.{key}", **kind)
        log = c3.checkbox("log", value=default.get("log", False), key=f"tune.log.{key}",
                          help="Draw on a log scale (rates, widths).")  # fmt: skip
        space[key] = {"low": low, "high": high, "log": log}
    metrics = search.metric_choices(meta, train)
    metric = st.selectbox("Objective", metrics, index=metrics.index(search.default_metric(meta, train)),
                          key="tune.metric",
                          help="The validation metric each trial ends with.")  # fmt: skip
    direction = search.default_direction(metric)
    st.caption(f"Each trial's final {metric} is {direction}d.")
    c1, c2 = st.columns(2)
    sampler = c1.selectbox("Sampler", list(search.SAMPLERS), format_func=lambda k: k.upper() if k == "tpe" else k,
                           key="tune.sampler", help="\n".join(f"- {v}" for v in search.SAMPLERS.values()))  # fmt: skip
    pruner = c2.selectbox("Pruner", list(search.PRUNERS), key="tune.pruner",
                          help="\n".join(f"- {v}" for v in search.PRUNERS.values()))  # fmt: skip
    c1, c2 = st.columns(2)
    trials = c1.number_input("Trials", 1, 1000, 12, key="tune.trials")
    most = max(1, gpu_count() or CORES)
    workers = c2.number_input("Parallel trials", 1, most, min(2, most), key="tune.workers",
                              help="Worker processes sharing the study; the run queue places their runs (one per "
                              "GPU, or as many as LAYERLAB_CPU_RUNS allows on the CPU).")  # fmt: skip
    st.caption(
        f"Each trial trains for {train['epochs']} epoch(s) with the Train page's other settings."
    )
    if st.button("Start the search", type="primary", icon=":material/travel_explore:", width="stretch",
                 key="tune.start"):  # fmt: skip
        current = {k: knobs[k]["value"] for k in chosen}
        try:
            study_dir = search.create_study({
                "name": name.strip() or "search", "dataset_dir": str(load_dataset(meta["id"]).path),
                "spec": spec, "train": train, "space": space, "metric": metric, "direction": direction,
                "sampler": sampler, "pruner": pruner, "trials": int(trials), "workers": int(workers),
                "seed": int(train.get("seed", 0)), "enqueue": [current] if sampler != "grid" else [],
            })  # fmt: skip
            search.start(study_dir)
            st.session_state[STUDY] = study_dir.name
            st.rerun()
        except LayerLabError as e:
            show_error(e)

with view:
    studies = search.list_studies()
    if not studies:
        st.info(
            "No search yet. Choose the settings to search on the left (the learning rate and a layer's width "
            "are chosen for you) and press **Start the search**. The first trial trains your current settings."
        )
    else:
        names = {s["dir"].name: s["name"] for s in studies}
        shown = st.session_state.get(STUDY)
        shown = shown if shown in names else studies[0]["dir"].name
        pick = st.selectbox("Study", list(names), index=list(names).index(shown),
                            format_func=lambda d: f"{names[d]} ({d[:15]})", key="tune.pick")  # fmt: skip
        st.session_state[STUDY] = pick
        study_dir = Path(next(s["dir"] for s in studies if s["dir"].name == pick))
        study_actions(study_dir)
        study_view(study_dir)
