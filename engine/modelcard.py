"""A run's model card (MODEL_CARD.md in every bundle, previewed on the Export page): what the model is for, the data
and its splits, the architecture, how it was trained, its metrics on the test split (per class where it applies),
its known limitations and how to use it. Every number comes from the run, its dataset and an evaluation of its test
split; nothing is typed in."""

from pathlib import Path

from engine.compiler import analyse
from engine.errors import LayerLabError
from engine.evaluate import evaluate_run
from engine.spec import data_inputs

SMALL_DATA = 1000  # training rows below which the card warns that the data is small
FEW_PER_CLASS = 30  # test rows of a class below which its scores are called rough
# Numbers in an evaluation that describe the model or the split, not how well it does.
SIZES = ("n", "noise", "latent_size")


def _number(v) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_number(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _metrics(report: dict | None) -> tuple[str, list[str]]:
    """The test split's metrics as Markdown, and what they say about the model's limits."""
    if not report:
        return "Not measured: the run's dataset is no longer in the workspace.", []
    limits = []
    lines = [f"On the **{report['split']}** split ({report.get('n', '?'):,} rows), never seen in training:\n"
             if isinstance(report.get("n"), int) else f"On the **{report['split']}** split:\n"]  # fmt: skip
    summary = report.get("summary") or {
        k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    lines.append(
        _table(["metric", "value"], [[k, v] for k, v in summary.items() if k not in SIZES])
    )
    if report.get("per_class"):
        lines.append("\nPer class:\n")
        lines.append(_table(["class", "precision", "recall", "F1", "test rows"],
                            [[c["class"], c["precision"], c["recall"], c["f1"], c["support"]]
                             for c in report["per_class"]]))  # fmt: skip
        rare = [c["class"] for c in report["per_class"] if c["support"] < FEW_PER_CLASS]
        if rare:
            limits.append(f"Fewer than {FEW_PER_CLASS} test rows for {', '.join(rare)}: those classes' scores "
                          "are rough estimates.")  # fmt: skip
        worst = min(report["per_class"], key=lambda c: c["f1"])
        limits.append(f"Weakest class: {worst['class']} (F1 {worst['f1']:.3g}).")
    return "\n".join(lines), limits


def model_card(run_dir: Path, info: dict, manifest: dict, dataset, usage: str) -> str:
    """The card's Markdown. `info`: the run's run_info; `manifest`: the bundle's manifest (config, spec, versions,
    metrics); `dataset`: the run's dataset, or None when it is gone; `usage`: how to call the model."""
    config, spec = manifest["config"], manifest["spec"]
    meta = dataset.meta if dataset is not None else {}
    try:
        report = evaluate_run(run_dir, "test") if dataset is not None else None
    except (LayerLabError, RuntimeError, ValueError):
        report = None  # a card without metrics, rather than no bundle
    metrics, limits = _metrics(report)
    health = meta.get("health") or {}
    limits = list(health.get("warnings") or []) + limits
    sizes = meta.get("sizes") or {}
    if sizes and sizes.get("train", 0) < SMALL_DATA:
        limits.append(f"Small data: {sizes['train']:,} training rows. Expect it to do worse on new data than on "
                      "its test split, and retrain with more rows when you have them.")  # fmt: skip
    limits.append("It knows only what its training data showed: rows or images unlike them (other sources, "
                  "other units, new categories) get confident answers that may be wrong.")  # fmt: skip

    nodes, _ = analyse(spec, data_inputs(meta)) if meta else ([], None)
    architecture = (
        _table(
            ["layer", "op", "output shape", "parameters"],
            [[n.id, n.op, "×".join(map(str, n.output_shape)), n.params] for n in nodes],
        )  # fmt: skip
        if nodes
        else "See model.py."
    )
    total = sum(n.params for n in nodes)
    shown = ("loss", "optimizer", "lr", "batch_size", "epochs", "weight_decay", "scheduler", "early_stopping",
             "seed", "precision")  # fmt: skip
    settings = [[k, "auto" if config[k] is None else config[k]] for k in shown if k in config]
    best = manifest.get("best") or {}
    classes = meta.get("classes")
    data_lines = [
        f"- Dataset: **{meta.get('name', '?')}** (source: {meta.get('source', '?')}), "
        f"SHA-256 `{meta.get('hash', '?')}`.",
        "- Splits: " + (", ".join(f"{s} {n:,} rows" for s, n in sizes.items()) or "unknown") + ".",
        f"- Input shape per sample: {tuple(meta.get('input_shape') or ())}.",
    ]
    if classes:
        data_lines.append(f"- Classes ({len(classes)}): {', '.join(map(str, classes))}.")
    if health.get("class_counts"):
        data_lines.append("- Training rows per class: "
                          + ", ".join(f"{c} {n:,}" for c, n in health["class_counts"].items()) + ".")  # fmt: skip
    return "\n".join(
        [
            f"# Model card: {info.get('name', run_dir.name)}",
            "",
            f"Trained with LayerLab {manifest['versions'].get('layerlab', '?')} (PyTorch "
            f"{manifest['versions'].get('torch', '?')}); run `{info.get('id', run_dir.name)}`, "
            f"ended {manifest.get('status') or info.get('state', '?')}.",
            "",
            "## Intended use",
            "",
            f"Task: **{meta.get('task', '?')}**"
            + (
                f" (trained as {config['target']})"
                if config.get("target") not in (None, "label")
                else ""
            )
            + f" on data like *{meta.get('name', '?')}*. It is a model for inputs shaped like its training data, "
            "not for decisions about people without a human review.",
            "",
            "## Data",
            "",
            *data_lines,
            "",
            "## Architecture",
            "",
            f"{len(nodes)} layers, {total:,} parameters." if nodes else "",
            "",
            architecture,
            "",
            "## Training",
            "",
            _table(["setting", "value"], settings),
            "",
            "Best epoch: " + ", ".join(f"{k} {_number(v)}" for k, v in best.items()) + "."
            if best.get("epoch") is not None
            else "",
            "",
            "## Metrics",
            "",
            metrics,
            "",
            "## Known limitations",
            "",
            *[f"- {line}" for line in limits],
            "",
            "## How to use it",
            "",
            usage,
            "",
        ]
    )
