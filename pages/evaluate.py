"""Evaluate: how a trained model does on rows it never trained on (its test split by default)."""

from pathlib import Path

import streamlit as st

from engine.data.store import load_dataset
from engine.errors import LayerLabError
from engine.evaluate import evaluate_run, vae_interpolation
from engine.tasks import TASKS
from engine.train.options import LOSSES
from ui.common import page, show_error, trained_run
from ui.evaluate_views import (
    class_table,
    confusion_figure,
    forecast_view,
    regression_figures,
    roc_pr_figures,
    text_view,
    wide_confusion,
    worst_rows,
)
from ui.explain_views import explain_section
from ui.generative_views import (
    gan_cards,
    latent_figure,
    points_figure,
    show_pairs,
    show_samples,
    vae_cards,
)

page(
    "Evaluate",
    "How a trained model does on data it never saw: its test split, with every metric, the confusion "
    "matrix, the curves and its worst mistakes.",
)


@st.cache_data(max_entries=16, show_spinner="Scoring the split…")
def report(path: str, split: str, weights_mtime: float) -> dict:
    return evaluate_run(Path(path), split)


@st.cache_data(max_entries=16, show_spinner=False)
def interpolate(path: str, split: str, a: int, b: int, steps: int, weights_mtime: float) -> dict:
    return vae_interpolation(Path(path), split, a, b, steps)


c1, c2 = st.columns([3, 1])
run = trained_run("Run", "evaluate.run", c1)
split = c2.selectbox(
    "Split",
    ["test", "val", "train"],
    key="evaluate.split",
    help="test: rows held out from training and from choosing the best epoch.",
)
weights = Path(run["path"]) / "model.safetensors"
try:
    result = report(run["path"], split, weights.stat().st_mtime)
    dataset = load_dataset(run["dataset_id"])
except LayerLabError as e:
    show_error(e)
    st.stop()
st.caption(
    f"{result['n']:,} {TASKS[result['task']].samples} of the {split} split of {result['dataset']}."
)
summary = result["summary"]
kind = TASKS[result["task"]].predictions

if kind == "generated":  # a GAN
    gan_cards(summary)
    if "points" in result:
        st.plotly_chart(
            points_figure(
                result["points"]["real"],
                result["points"]["generated"],
                f"1,000 generated points over the {split} split's",
            ),  # fmt: skip
            width="stretch",
            key="evaluate.gan_points",
        )
    else:
        show_samples(
            result["samples"], result["image"], "Generated samples (noise drawn with seed 0)."
        )
    st.caption(
        "A generator is judged by its samples: look at them. On points with labelled modes, the modes covered "
        "measure mode collapse; on images, a discriminator near 100% on generated samples is winning outright."
    )
elif kind == "samples":  # a VAE
    vae_cards(summary, LOSSES[result["loss"]].title)
    show_pairs(result["originals"], result["reconstructions"], result["image"],
               f"The first {len(result['originals'])} {split} rows (top) and their reconstructions.")  # fmt: skip
    show_samples(result["samples"], result["image"],
                 "New samples: codes drawn from the prior N(0, 1), decoded.")  # fmt: skip
    st.plotly_chart(latent_figure(result["latent"]), width="stretch", key="evaluate.latent")
    st.subheader("Interpolation")
    a, b, steps = st.columns(3)
    first = a.number_input("From row", 0, result["n"] - 1, 0, key="evaluate.from")
    last = b.number_input("To row", 0, result["n"] - 1, min(1, result["n"] - 1), key="evaluate.to")
    count = steps.number_input("Steps", 3, 16, 8, key="evaluate.steps")
    line = interpolate(
        run["path"], split, int(first), int(last), int(count), weights.stat().st_mtime
    )
    show_samples(line["steps"], line["image"], f"From row {first} to row {last} of the {split} split, "
                 "along the straight line between their codes.", per_row=int(count))  # fmt: skip
elif kind == "forecast":
    forecast_view(result, dataset.meta["preprocessing"]["columns"][0])
elif kind == "text":
    text_view(result)
elif kind == "classes":
    cards = st.columns(4)
    cards[0].metric("Accuracy", f"{summary['accuracy']:.1%}")
    cards[1].metric(
        "Macro F1",
        f"{summary['macro_f1']:.3f}",
        help="F1 averaged over classes, each counting the same.",
    )
    cards[2].metric(
        "Weighted F1",
        f"{summary['weighted_f1']:.3f}",
        help="F1 averaged over classes by their rows.",
    )
    if "roc_auc" in summary:
        cards[3].metric(
            "ROC AUC",
            f"{summary['roc_auc']:.3f}",
            help="Area under the ROC curve (one vs rest, "
            "averaged over classes, when more than two).",
        )
    wide = wide_confusion(
        result
    )  # many or long class names: table above, the matrix across the page
    left, right = (st.container(), st.container()) if wide else st.columns([1.2, 1])
    with left:
        st.dataframe(class_table(result), hide_index=True, width="stretch")
    with right:
        normalized = st.toggle("Normalize by true class", key="evaluate.normalized")
        st.plotly_chart(
            confusion_figure(result, normalized), width="stretch", key="evaluate.confusion"
        )
    if result["curves"]:
        roc, pr = roc_pr_figures(result)
        c3, c4 = st.columns(2)
        c3.plotly_chart(roc, width="stretch", key="evaluate.roc")
        c4.plotly_chart(pr, width="stretch", key="evaluate.pr")
    st.subheader("Misclassified, most confident first")
else:
    target = ((dataset.meta.get("preprocessing") or {}).get("target") or {}).get("name", "target")
    cards = st.columns(3)
    cards[0].metric(
        "MAE", f"{summary['mae']:.4g}", help="Mean absolute error, in the target's units."
    )
    cards[1].metric(
        "RMSE", f"{summary['rmse']:.4g}", help="Root mean squared error: big misses count more."
    )
    cards[2].metric(
        "R²",
        f"{summary['r2']:.3f}",
        help="1 is perfect; 0 is no better than always predicting the mean.",
    )
    scatter, hist = regression_figures(result, target)
    c3, c4 = st.columns(2)
    c3.plotly_chart(scatter, width="stretch", key="evaluate.scatter")
    c4.plotly_chart(hist, width="stretch", key="evaluate.residuals")
    st.subheader("Worst predictions")
if kind not in ("forecast", "text", "samples", "generated"):
    worst_rows(result, dataset, split)
if kind in ("classes", "values"):
    explain_section(Path(run["path"]), dataset, split)
