"""What the proposed model reaches on each kind of data, with the epochs and learning rate it is proposed with.

    python bench/proposed.py [--sets moons,iris,...] [--csv FILE:TARGET ...]
                             [--series FILE:TARGET:TIME:WINDOW:HORIZON[:SEASON] ...] [--text FILE ...] [--vae]

For each built-in set (default size, noise and seed), each CSV and each series given, prepares the data, trains
`engine.templates.starter_for(meta)` with `starter_train(meta)` on the CPU, and prints validation and test
accuracy (R² for regression; for a forecast, its MAE over the naive forecast's, and on the test split over the
seasonal naive forecast's too; for a language model, bits per token, and on the test split the unigram
baseline's) with the training time. With --vae, the tables and images train the VAE they get instead
(`engine.templates.vae_template`), and the row gives the reconstruction loss per row (test: beside the mean training
row's, and the KL). No reference run: these are the bars the README states.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_SETS = (
    "moons,spiral,iris,wine,breast_cancer,diabetes,digits,shapes,reviews,orders,traffic,tales"
)


def main() -> None:
    import os
    import tempfile

    os.environ.setdefault("LAYERLAB_HOME", tempfile.mkdtemp(prefix="layerlab-bench-"))
    from engine.data.corpus import CorpusOptions
    from engine.data.prepare import (
        prepare_builtin,
        prepare_corpus_file,
        prepare_file,
        prepare_series_file,
    )
    from engine.data.series import SeriesOptions
    from engine.evaluate import evaluate_run
    from engine.runs import create_run, execute
    from engine.templates import _kind, build, starter_for, starter_train, vae_template

    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default=DEFAULT_SETS)
    ap.add_argument("--csv", nargs="*", default=[], help="FILE:TARGET, a table of your own")
    ap.add_argument(
        "--series", nargs="*", default=[], help="FILE:TARGET:TIME:WINDOW:HORIZON[:SEASON]"
    )
    ap.add_argument(
        "--text", nargs="*", default=[], help="a plain text file, for a character language model"
    )
    ap.add_argument("--vae", action="store_true", help="train each table's or image set's VAE")
    args = ap.parse_args()
    datasets = [prepare_builtin(name) for name in args.sets.split(",") if name]
    for item in args.csv:
        path, target = item.rsplit(":", 1)
        datasets.append(prepare_file(Path(path).read_bytes(), Path(path).name, target))
    for item in args.series:
        path, target, time_column, window, horizon, *season = item.split(":")
        options = {
            "target": target,
            "time_column": time_column or None,
            "window": window,
            "horizon": horizon,
        }
        options["season"] = int(season[0]) if season else None
        datasets.append(
            prepare_series_file(
                Path(path).read_bytes(), Path(path).name, SeriesOptions.parse(options)
            )
        )
    for path in args.text:
        datasets.append(
            prepare_corpus_file(Path(path).read_bytes(), Path(path).name, CorpusOptions())
        )
    print("| data | kind | proposed model | epochs, lr | val | test | seconds |")
    print("|---|---|---|---|---:|---:|---:|")
    for ds in datasets:
        spec, train = starter_for(ds.meta), starter_train(ds.meta)
        if args.vae:
            template = vae_template(ds.meta)
            spec, train = build(template, ds.meta), dict(template.train)
        start = time.perf_counter()
        run = create_run(spec, {**train, "device": "cpu"}, ds.path)
        final = execute(run)
        seconds = time.perf_counter() - start
        report = evaluate_run(run)
        if (
            ds.task == "forecast"
        ):  # MAE over the naive forecast's (below 1: better than repeating the last value)
            metrics = final["metrics"]
            final["metrics"]["val/mae over naive"] = metrics["val/mae"] / metrics["val/naive_mae"]
            metric, ratios = "mae over naive", report["ratios"]
            test = ratios["naive"]["mae"]
            if "seasonal_naive" in ratios:
                test = f"{test:.3f} (÷ seasonal naive: {ratios['seasonal_naive']['mae']:.3f})"
        elif (
            ds.task == "language_model"
        ):  # bits per token (the unigram baseline's on the test split)
            metric = "bits_per_token"
            summary = report["summary"]
            test = f"{summary['bits_per_token']:.3f} (unigram: {summary['unigram_bits_per_token']:.3f})"
        elif args.vae:  # reconstruction per row (test: the mean training row's, and the KL per row)
            metric, summary = "reconstruction", report["summary"]
            test = (
                f"{summary['reconstruction']:.3f} (mean row: {summary['mean_row_reconstruction']:.3f}; "
                f"KL {summary['kl']:.2f})"
            )
        else:
            metric = "accuracy" if ds.task == "classification" else "r2"
            test = report["summary"].get(metric)
        ops = [n["op"] for n in spec["nodes"]]
        print(
            f"| {ds.meta['name']} | {_kind(ds.meta)} | {len(ops)} layers ({', '.join(dict.fromkeys(ops))}) | "
            f"{train['epochs']}, {train['lr']:g} | {final['metrics'].get('val/' + metric, float('nan')):.3f} | "
            f"{test if isinstance(test, str) else f'{test:.3f}'} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
