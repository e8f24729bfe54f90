"""Headless entry: `python -m engine train --data FILE.csv --target COLUMN --out DIR [...]`,
`python -m engine resume RUN_DIR` to continue a stopped or killed run, `python -m engine evaluate RUN_DIR`, and
`python -m engine export RUN_DIR --format bundle|onnx|torchscript|safetensors|state_dict --out PATH`, and
`python -m engine predict --model BUNDLE.zip|RUN_DIR|MODEL.safetensors --data FILE --out FILE.csv`.

Prepares the data as the Data page does, trains in this process (with `--nproc N`, on N processes
under torchrun; `--emit-launch` writes the files for several machines instead), writes the same run
folder as the app and prints one JSON event per line. Bad input exits 2 with a one-line message.
"""

import argparse
import json
import sys
from pathlib import Path

from engine.errors import LayerLabError
from engine.limits import ARCHIVE_BYTES, DATA_BYTES
from engine.quantize import DEFAULT_MAX_DROP
from engine.quantize import FORMATS as QUANTIZED

# Optional flags passed to train.json under the same names (unset: TrainConfig's default).
TRAIN_FLAGS = (
    "scheduler",
    "early_stopping",
    "monitor",
    "min_delta",
    "l1",
    "l2",
    "weight_decay",
    "clip_grad_norm",
    "clip_grad_value",
    "accumulate",
    "class_weights",
    "label_smoothing",
    "precision",
    "compile",
    "channels_last",
    "diagnostics",
    "beta",
    "kl_warmup",
    "g_lr",
    "d_steps",
    "gan_loss",
)


def _train(args) -> int:
    _check_where(args)
    out = Path(args.out).resolve()
    dataset = _prepared(args, out / "dataset")
    if args.folds or args.learning_curve:
        return _several(args, dataset, out)
    return _run(args, dataset, out)


def _prepared(args, root: Path):
    """The data file prepared as the Data page does (its dataset folder under `root`)."""
    from engine.data.images import is_archive
    from engine.data.prepare import prepare_file, prepare_images
    from engine.data.readers import read_table
    from engine.data.tabular import suggest_columns

    _check_task_flags(args)
    data = Path(args.data)
    if not data.is_file():
        raise LayerLabError(
            f"no such data file: {data}. Pass the path of a table or an image archive with --data."
        )
    raw = _read_within(data, ARCHIVE_BYTES if is_archive(data.name) else DATA_BYTES)
    if is_archive(data.name):  # images: folder names, MNIST or CIFAR labels
        return prepare_images(raw, data.name, size=args.image_size, grayscale=args.grayscale,
                              seed=args.seed, root=root, split=_split(args))  # fmt: skip
    if args.task == "language_model":
        return _corpus_data(args, raw, data.name, root)
    if not args.target:
        raise LayerLabError("--target is required for a table: name the column to predict.")
    if args.task == "forecast":
        return _forecast_data(args, raw, data.name, root)
    plans, source = None, None
    if (
        args.text_column
    ):  # these columns are text; the others keep the suggested plan (a second input)
        source = read_table(raw, data.name)
        frame = source.frame
        unknown = [c for c in args.text_column if c not in frame.columns]
        if unknown:
            raise LayerLabError(f"--text-column '{unknown[0]}' is not a column of {data.name}.")
        plans = [
            p.model_copy(
                update={"kind": "text", "role": "feature", "missing": "constant", "note": ""}
            )
            if p.name in args.text_column
            else p
            for p in suggest_columns(frame, args.target)
        ]
    return prepare_file(
        raw,
        data.name,
        args.target,
        task=None if args.task in ("vae", "gan") else args.task,
        plans=plans,
        seed=args.seed,
        root=root,
        source=source,
        split=_split(args),
    )


TASK_FLAGS = {  # the flags only these tasks take
    "forecast": ("time_column", "window", "horizon", "stride", "season", "covariate", "no_scale"),
    "language_model": ("tokens", "context"),
    "vae": ("beta", "kl_warmup"),
    "gan": ("g_lr", "d_steps", "gan_loss"),
}


def _check_task_flags(args) -> None:
    for task, flags in TASK_FLAGS.items():
        given = [f for f in flags if getattr(args, f) not in (None, [], False)]
        if given and args.task != task:
            raise LayerLabError(
                f"--{given[0].replace('_', '-')} is for --task {task}: add --task {task}."
            )


def _forecast_data(args, raw: bytes, name: str, root: Path):
    from engine.data.prepare import prepare_series_file
    from engine.data.series import SeriesOptions

    given = {
        "target": args.target,
        "time_column": args.time_column,
        "covariates": args.covariate or [],
        "window": args.window,
        "horizon": args.horizon,
        "stride": args.stride,
        "season": args.season,
        "scale": not args.no_scale,
    }
    options = SeriesOptions.parse({k: v for k, v in given.items() if v is not None})
    return prepare_series_file(raw, name, options, root=root)


def _corpus_data(args, raw: bytes, name: str, root: Path):
    from engine.data.corpus import CorpusOptions
    from engine.data.prepare import prepare_corpus_file

    if args.text_column and len(args.text_column) > 1:
        raise LayerLabError("a language model learns one text: pass one --text-column.")
    given = {"tokens": args.tokens, "context": args.context}
    options = CorpusOptions.parse({k: v for k, v in given.items() if v is not None})
    column = args.text_column[0] if args.text_column else None
    if column is None and Path(name).suffix.lower() != ".txt":
        raise LayerLabError(
            f"{name} is a table: name the column of text to learn with --text-column (or pass a plain .txt file)."
        )
    return prepare_corpus_file(raw, name, options, text_column=column, root=root)


def _generate(args) -> int:
    from engine.predict import generate_samples, generate_text, load_predictor
    from engine.workspace import atomic_write_bytes

    model, meta = load_predictor(args.run)
    if meta.get("task") != "language_model":  # a VAE: files of samples
        if not args.out:
            raise LayerLabError("--out is required: the folder to write the samples into.")
        files = generate_samples(model, meta, args.n, args.seed)
        for name, data in files.items():
            atomic_write_bytes(Path(args.out) / name, data)
        print(json.dumps({"samples": args.n, "out": str(args.out), "files": len(files)}))
        return 0
    print(
        generate_text(
            model,
            meta,
            args.prompt,
            length=args.length,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
        )  # fmt: skip
    )
    return 0


def _read_within(path: Path, budget) -> bytes:
    """A data file's bytes, its size checked against `budget` (an `engine.limits.Limit`) before it is read."""
    size = path.stat().st_size
    if size > budget.value:
        raise budget.refuse(
            str(path), f"the file holds {budget.describe(size)}", "Sample or split it first."
        )
    return path.read_bytes()


def _split(args):
    """--val-split and --test-split (each default 0.15) as a Split; a share out of range says so."""
    from pydantic import ValidationError

    from engine.data.tabular import Split

    given = {"val": args.val_split, "test": args.test_split}
    try:
        return Split.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        flag = f"--{first['loc'][0]}-split " if first["loc"] else ""
        raise LayerLabError(f"{flag}{first['msg'].removeprefix('Value error, ')}.") from None


def _run(args, dataset, out: Path) -> int:
    from engine.runs import create_run

    spec, train = _spec_train(args, dataset)
    for note in dataset.meta.get("notices") or []:
        print(f"note: {note}", file=sys.stderr)
    nodes = args.nodes or 1
    if nodes > 1 and not args.emit_launch:
        raise LayerLabError(
            "--nodes needs --emit-launch torchrun|slurm|kubernetes: the run is started on the other "
            "machines by the files it writes."
        )
    processes = args.nproc or 1
    dropped = _dropped_rows(args.drop_rows) if getattr(args, "drop_rows", None) else None
    run_dir = create_run(spec, train, dataset.path, run_dir=out, name=out.name,
                         processes=processes, nodes=nodes if args.emit_launch else 1,
                         extra={"drop_rows": dropped} if dropped else None)  # fmt: skip
    if args.emit_launch:
        return _emit_launch(run_dir, args.emit_launch, nodes, processes, train["device"])
    return _start(run_dir, args)


def _dropped_rows(value: str) -> list[int]:
    """--drop-rows: "3,17,42", or a file from `dynamics --out` (its suspects' rows) or a JSON list."""
    path = Path(value)
    try:
        if path.is_file():
            found = json.loads(path.read_text())
            rows = [s["row"] for s in found["suspects"]] if isinstance(found, dict) else found
        else:
            rows = [r.strip() for r in value.split(",") if r.strip()]
        rows = sorted({int(r) for r in rows})
    except (ValueError, TypeError, KeyError, json.JSONDecodeError):
        raise LayerLabError(
            f"--drop-rows takes training-row positions as 3,17,42 or the JSON file `dynamics --out` writes; "
            f"could not read {value!r}."
        ) from None
    if any(r < 0 for r in rows):
        raise LayerLabError("--drop-rows: positions start at 0.")
    return rows


def _dynamics(args) -> int:
    """The training-dynamics map's summary, its likely mislabelled rows and pinned rows' timelines, as JSON."""
    from engine.data.folds import run_dataset
    from engine.train import dynamics
    from engine.workspace import atomic_write_json, read_json

    run_dir = Path(args.run_dir)
    train = read_json(run_dir / "train.json")
    if train is None:
        raise LayerLabError(f"no run at {run_dir}: pass a run's folder.")
    dataset = run_dataset(train)
    found = dynamics.cartography(
        run_dir, dataset.split("train")[1], dataset.meta.get("classes") or []
    )
    if found is None:
        raise LayerLabError(
            f"run {run_dir.name} has no training dynamics: they are kept for classifiers trained on one "
            "process, after their first epoch."
        )
    try:
        pins = [int(p) for p in args.pin.split(",") if p.strip()] if args.pin else []
    except ValueError:
        raise LayerLabError(f"--pin takes validation rows as 0,5,9 (got {args.pin!r}).") from None
    result = {"epochs": found["epochs"], "rows": len(found["rows"]), "counts": found["counts"],
              "suspects": found["suspects"],
              "pins": dynamics.timeline(run_dir, pins, dataset.split("val")[1], dataset.meta["classes"])}  # fmt: skip
    if args.out:
        atomic_write_json(Path(args.out), result)
    print(json.dumps(result))
    return 0


def _several(args, dataset, out: Path) -> int:
    """Cross-validation (k runs, one per fold) or a learning curve (four runs on growing shares of the rows),
    trained here one after the other; the last line holds their summary."""
    from engine import crossval, learning_curve

    flag = "--folds" if args.folds else "--learning-curve"
    if args.folds and args.learning_curve:
        raise LayerLabError("choose --folds or --learning-curve, not both.")
    if args.nproc or args.ray or args.emit_launch:
        raise LayerLabError(
            f"{flag} trains its runs in this process: leave out --nproc, --ray and --emit-launch."
        )
    if args.drop_rows:
        raise LayerLabError(f"{flag} chooses the training rows itself: leave out --drop-rows.")
    spec, train = _spec_train(args, dataset)
    if args.folds:
        runs = crossval.create_folds(spec, train, dataset.path, args.folds, name=out.name,
                                     run_dirs_=[out / f"fold-{i + 1}" for i in range(args.folds)])  # fmt: skip
    else:
        where = [out / f"share-{round(share * 100)}" for share in learning_curve.SHARES]
        runs = learning_curve.create_curve(
            spec, train, dataset.path, name=out.name, run_dirs_=where
        )
    for run_dir in runs:
        code = _start(run_dir, args)
        if code not in (0, 1):  # a signal stopped it: the other runs wait
            return code
    if args.folds:
        result = crossval.summary(runs)
        print(json.dumps({"type": "cross_validation_finished", "k": args.folds, **result}))
        return 0 if all(f["state"] == "completed" for f in result["folds"]) else 1
    result = learning_curve.points(runs)
    print(json.dumps({"type": "learning_curve_finished", **result}))
    return 0 if result["verdict"] else 1


def _spec_train(args, dataset) -> tuple[dict, dict]:
    """The model (--spec, else the one proposed for the data) and train.json's settings from the flags."""
    from engine.gan import gan_train, starter_gan
    from engine.templates import build, starter_for, starter_train, vae_template

    if args.spec:
        try:
            spec = json.loads(Path(args.spec).read_text())
        except FileNotFoundError:
            raise LayerLabError(f"no such spec file: {args.spec}.") from None
        except json.JSONDecodeError as e:
            raise LayerLabError(
                f"the spec file {args.spec} is not valid JSON ({e.msg}, line {e.lineno})."
            ) from None
    vae = vae_template(dataset.meta) if args.task == "vae" else None
    if args.task == "gan":
        spec = spec if args.spec else starter_gan(dataset.meta)
        proposed = gan_train(dataset.meta)
    else:
        if not args.spec:
            spec = build(vae, dataset.meta) if vae else starter_for(dataset.meta)
        proposed = dict(vae.train) if vae else starter_train(dataset.meta)
    batch_size = (
        max(1, min(32, dataset.meta["sizes"]["train"]))
        if args.batch_size is None
        else args.batch_size
    )
    train = {
        "epochs": proposed["epochs"] if args.epochs is None else args.epochs,
        "batch_size": batch_size,
        "lr": proposed["lr"] if args.lr is None else args.lr,
        "optimizer": args.optimizer,
        "loss": args.loss,
        "seed": args.seed,
        "device": args.device,
    }
    train.update(
        {k: v for k, v in proposed.items() if k not in train}
    )  # e.g. a forecaster's early stopping
    flags = (*TRAIN_FLAGS, *option_settings())
    train.update({name: getattr(args, name) for name in flags if getattr(args, name) is not None})
    return spec, train


def _search(args) -> int:
    """A study: its worker processes train the trials as queued runs; one JSON line per finished trial."""
    import signal
    import time

    from engine import search
    from engine.scheduler import dispatch

    out = Path(args.out).resolve()
    try:
        space = json.loads(Path(args.space).read_text())
    except FileNotFoundError:
        raise LayerLabError(f"no such space file: {args.space}.") from None
    except json.JSONDecodeError as e:
        raise LayerLabError(
            f"the space file {args.space} is not valid JSON ({e.msg}, line {e.lineno})."
        ) from None
    if (out / "study.json").exists():
        raise LayerLabError(f"{out} already holds a study: choose a new --out folder.")
    dataset = _prepared(args, out / "dataset")
    spec, train = _spec_train(args, dataset)
    metric = args.metric or search.default_metric(dataset.meta, train)
    study_dir = search.create_study(
        {"name": args.name or out.name, "dataset_dir": str(dataset.path), "spec": spec, "train": train,
         "space": space, "metric": metric, "direction": args.direction or search.default_direction(metric),
         "sampler": args.sampler, "pruner": args.pruner, "trials": args.trials, "workers": args.workers,
         "seed": args.seed, "storage": args.storage},
        out,
    )  # fmt: skip
    if args.ray:  # Ray Tune drives the trials from this process; their lines come at the end
        search.ray_tune(study_dir, args.ray)
    else:
        search.start(study_dir)
    stopping = []
    previous = signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    printed: set[int] = set()
    try:
        while True:
            alive = search.running(study_dir)
            study = search.load(study_dir)
            for row in search.trial_rows(study, study_dir):
                if row["state"] != "running" and row["number"] not in printed:
                    printed.add(row["number"])
                    print(json.dumps({"type": "trial_finished", **row}), flush=True)
            if not alive:
                break
            if stopping and not (study_dir / "stop").exists():
                search.request_stop(study_dir)
                print(
                    "stopping the study: the running trials stop at their next step",
                    file=sys.stderr,
                )
            dispatch()  # no app is serving the run queue
            time.sleep(1.0)
    finally:
        signal.signal(signal.SIGINT, previous)
    top = search.best(study, study_dir)
    print(json.dumps({"type": "study_finished", "best_value": top and top["value"],
                      "best_params": top and top["params"], "best_run": top and top["run"],
                      "trials": len(printed), "study": str(study_dir)}))  # fmt: skip
    return 130 if stopping else 0 if top else 1


def _lr_find(args) -> int:
    import tempfile

    from engine.runs import validate
    from engine.train.lr_find import lr_range_test

    with tempfile.TemporaryDirectory() as tmp:
        dataset = _prepared(args, Path(tmp))
        spec, train = _spec_train(args, dataset)
        _, cfg = validate(spec, train, dataset.meta)
        result = lr_range_test(spec, dataset, cfg, low=args.low, high=args.high, steps=args.steps)
    if result["suggestion"] is None:
        print(
            "note: the loss did not fall over the sweep; try more steps or a wider range",
            file=sys.stderr,
        )
    print(json.dumps({"type": "lr_found", "suggested_lr": result["suggestion"],
                      **{k: result[k] for k in ("lrs", "losses", "stopped_at", "seconds")}}))  # fmt: skip
    return 0


def _check(args) -> int:
    """The will-it-learn check: each item as a line of JSON; 1 when one fails."""
    import tempfile

    from engine.runs import validate
    from engine.train.learncheck import DEFAULT_LR, check_learning

    with tempfile.TemporaryDirectory() as tmp:
        dataset = _prepared(args, Path(tmp))
        spec, train = _spec_train(args, dataset)
        validate(
            spec, {**train, "lr": train["lr"] if train["lr"] > 0 else DEFAULT_LR}, dataset.meta
        )
        result = check_learning(spec, dataset, train)
    for item in result["items"]:
        fix = item["fix"] and {"label": item["fix"]["label"], "train": item["fix"]["train"]}
        print(json.dumps({"type": "check", "id": item["id"], "title": item["title"], "passed": item["passed"],
                          "message": item["message"], "fix": fix}))  # fmt: skip
    failed = [i["id"] for i in result["items"] if not i["passed"]]
    print(f"{len(result['items']) - len(failed)} of {len(result['items'])} checks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _diagram(args) -> int:
    """The architecture drawn as on the Build page, as SVG or PNG (by --out's extension)."""
    from engine import diagram
    from engine.gan import is_gan
    from engine.spec import parse_spec
    from engine.workspace import atomic_write_bytes, read_json

    where, out = Path(args.model), Path(args.out)
    if out.suffix.lower() not in (".svg", ".png"):
        raise LayerLabError(f"--out must end in .svg or .png (got '{out.name}').")
    folder = where.is_dir()
    source = where / "spec.json" if folder else where
    if not source.is_file():
        raise LayerLabError(
            f"{where} is neither a spec JSON file nor a run folder with a spec.json."
        )
    if source.stat().st_size > 16 * 2**20:
        raise LayerLabError(f"{source} is over 16 MB: a spec is a small JSON file.")
    text = source.read_text(encoding="utf-8", errors="replace")
    try:
        spec = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        spec = text  # parse_spec says what is wrong with it
    if is_gan(spec):
        spec = spec[args.part]
    spec = parse_spec(spec).to_dict()
    meta = None
    if args.input_shape:
        try:
            shape = [int(v) for v in args.input_shape.split(",")]
        except ValueError:
            raise LayerLabError(
                f"--input-shape takes sizes separated by commas, e.g. 3,32,32 (got '{args.input_shape}')."
            ) from None
        meta = {"input_shape": shape, "inputs": None}
    elif folder:
        dataset_dir = read_json(where / "train.json", {}).get("dataset_dir")
        meta = read_json(Path(dataset_dir) / "meta.json", None) if dataset_dir else None
    meta = meta or diagram.meta_from_spec(spec)
    if meta is None:
        raise LayerLabError(
            "the spec does not say its input's shape: pass --input-shape (e.g. 2, or 3,32,32) or a run folder."
        )
    data = (
        diagram.png(spec, meta)
        if out.suffix.lower() == ".png"
        else diagram.svg(spec, meta).encode()
    )
    atomic_write_bytes(out, data)
    print(json.dumps({"out": str(out), "bytes": len(data), "layers": len(spec["nodes"])}))
    return 0


def _check_where(args) -> None:
    """--nproc, --nodes and --max-restarts are counts: refused before any data is read."""
    for flag, least in (("nproc", 1), ("nodes", 1), ("max_restarts", 0)):
        value = getattr(args, flag, None)
        if value is not None and value < least:
            raise LayerLabError(
                f"--{flag.replace('_', '-')} must be {least} or more (got {value})."
            )


def _start(run_dir: Path, args, resume: bool = False) -> int:
    """Train the run here: in this process, with --nproc on N processes under torchrun, or with
    --ray on a Ray cluster."""
    from engine.runs import train_here

    result = train_here(run_dir, args.nproc, args.ray, resume=resume, echo=True,
                        max_restarts=args.max_restarts)  # fmt: skip
    return _finished(result, run_dir)


def _emit_launch(run_dir: Path, kind: str, nodes: int, processes: int, device: str) -> int:
    """Write the files that start the run on several machines, and start nothing."""
    from engine.launch import launch_files, storage_warning
    from engine.train.distributed import uses_cuda

    for name, text in launch_files(run_dir, kind, nodes, processes, uses_cuda(device)).items():
        (run_dir / name).write_text(text)
        print(f"wrote {run_dir / name}")
    warning = storage_warning(run_dir)
    if warning:
        print(f"note: {warning}", file=sys.stderr)
    return 0


def _finished(result: dict, run_dir: Path) -> int:
    """The exit code: 0 completed or stopped, 1 failed; 128 + the signal's number when a signal stopped it (after
    one line saying how to go on)."""
    if result.get("signal"):
        import signal

        print(
            f"stopped by {result['signal']}: a checkpoint was written; continue with "
            f"`python -m engine resume {run_dir}`.",
            file=sys.stderr,
        )
        return 128 + signal.Signals[result["signal"]].value
    return 0 if result["status"] in ("completed", "stopped") else 1


def _resume(args) -> int:
    from engine.runs import prepare_resume

    _check_where(args)
    run_dir = Path(args.run_dir)
    if not (run_dir / "train.json").exists():
        raise LayerLabError(f"{run_dir} is not a run folder (it has no train.json).")
    return _start(prepare_resume(run_dir), args, resume=True)


def _where(parser) -> None:
    """--nproc and --max-restarts: where a run trains (train and resume)."""
    parser.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train on N processes of this machine under torchrun (DistributedDataParallel; "
        "up to the number of GPUs on CUDA; CPU processes are for trying it out). The batch size "
        "stays the global batch.",
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        metavar="R",
        help="with --nproc: restart the processes from the last checkpoint up to R times when "
        "one fails",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="train on the Ray cluster at ADDRESS (auto, HOST:6379 or ray://HOST:10001) with "
        "--nproc workers (default 2); needs the optional extra: pip install -e '.[ray]'",
    )


def _evaluate(args) -> int:
    from engine.evaluate import evaluate_run

    if not (Path(args.run_dir) / "train.json").exists():
        raise LayerLabError(f"{args.run_dir} is not a run folder (it has no train.json).")
    report = evaluate_run(Path(args.run_dir), args.split)
    keep = (
        "run",
        "split",
        "dataset",
        "task",
        "n",
        "summary",
        "per_class",
        "averages",
        "confusion",
        "classes",
        "baselines",
        "ratios",
        "by_step",
        "judged",
    )
    print(json.dumps({k: report[k] for k in keep if k in report}, indent=1))
    return 0


def _export(args) -> int:
    from engine.export import load_model, onnx_bytes, state_dict_bytes, torchscript_bytes
    from engine.workspace import atomic_write_bytes

    weights = Path(args.run_dir) / "model.safetensors"
    if not weights.exists():
        raise LayerLabError(
            f"{args.run_dir} has no model.safetensors: pass a finished run's folder."
        )
    if args.format in QUANTIZED:
        return _export_quantized(args)
    if args.format == "bundle":
        from engine.bundle import bundle_bytes

        data = bundle_bytes(Path(args.run_dir))
    elif args.format == "safetensors":
        data = weights.read_bytes()
    else:
        model, _ = load_model(weights)
        data = {
            "onnx": onnx_bytes,
            "torchscript": torchscript_bytes,
            "state_dict": lambda m: state_dict_bytes(m),
        }[args.format](model)
    atomic_write_bytes(Path(args.out), data)
    print(json.dumps({"format": args.format, "out": str(args.out), "bytes": len(data)}))
    return 0


def _export_quantized(args) -> int:
    """A quantized variant written to --out, and how it compares with the original, as JSON."""
    import tempfile

    from engine.quantize import compare
    from engine.workspace import atomic_write_bytes

    with tempfile.TemporaryDirectory() as folder:
        result = compare(Path(args.run_dir), [args.format], args.max_drop, keep=Path(folder))
        original, row = result["rows"]
        if "error" in row:
            raise LayerLabError(row["error"])
        atomic_write_bytes(Path(args.out), (Path(folder) / row.pop("file")).read_bytes())
    print(json.dumps({"format": args.format, "out": str(args.out), "bytes": row["bytes"], "metric": result["metric"],
                      "test_rows": result["test_rows"], "variant": row, "original": original}))  # fmt: skip
    return 0


def _predict(args) -> int:
    from engine.data.readers import read_table
    from engine.portable import IMAGE_EXTENSIONS, csv_bytes
    from engine.predict import load_predictor, predict_images, predict_table
    from engine.workspace import atomic_write_bytes

    model, meta = load_predictor(args.model)
    data = Path(args.data)
    if data.is_dir():  # a folder of images
        files = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        total = sum(p.stat().st_size for p in files)
        if total > ARCHIVE_BYTES.value:
            raise ARCHIVE_BYTES.refuse(
                str(data),
                f"its {len(files):,} images hold {ARCHIVE_BYTES.describe(total)}",
                "Predict a smaller folder at a time.",
            )
        table = predict_images(model, meta, [(p.name, p.read_bytes()) for p in files])
    elif data.is_file():
        table = predict_table(
            model, meta, read_table(_read_within(data, DATA_BYTES), data.name).frame
        )
    else:
        raise LayerLabError(
            f"no such file or folder: {data}. Pass a table, or a folder of images, with --data."
        )
    atomic_write_bytes(Path(args.out), csv_bytes(table))
    print(json.dumps({"rows": len(table), "out": str(args.out)}))
    return 0


def _serve(args) -> int:
    from engine.bundle import versions
    from engine.predict import load_predictor, noise_size, serving_info
    from engine.service import Service, serve

    model, meta = load_predictor(args.model)
    source = Path(args.model)
    train = source / "train.json"
    name = json.loads(train.read_text()).get("name") if train.is_file() else source.stem
    service = Service(
        model, serving_info(model, meta), name or source.stem, versions(), noise_size(model)
    )
    return serve(service, args.host, args.port, args.quiet, args.stop_with)


def _explain(args) -> int:
    """Attributions for rows or images (new ones, or the first --count of a split), or permutation importance."""
    import torch

    from engine import explain
    from engine.data.readers import read_table
    from engine.data.tabular import apply_preprocessing
    from engine.portable import IMAGE_EXTENSIONS
    from engine.predict import image_tensor
    from engine.workspace import atomic_write_bytes, atomic_write_json

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise LayerLabError(
            f"no such run folder: {run_dir}. Pass a run's folder (runs/<id> in the workspace)."
        )
    model, dataset = explain.run_parts(run_dir)
    meta, out = dataset.meta, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.method == "permutation":
        x, y = dataset.split(args.split)
        result = explain.permutation_importance(model, meta, x, y)
        atomic_write_json(out / "permutation.json", result)
        print(json.dumps(result))
        return 0
    target = None
    if args.target_class is not None:
        classes = [str(c) for c in meta.get("classes") or []]
        if args.target_class in classes:
            target = classes.index(args.target_class)
        elif args.target_class.isdigit():
            target = int(args.target_class)
        else:
            raise LayerLabError(
                f"no class {args.target_class!r}: this model's classes are {', '.join(classes)}."
            )
    originals, names = None, None
    if args.rows:
        path = Path(args.rows)
        if not path.is_file():
            raise LayerLabError(f"no such file: {path}. Pass a table of rows with --rows.")
        originals = read_table(_read_within(path, DATA_BYTES), path.name).frame
        x = torch.from_numpy(apply_preprocessing(originals, meta["preprocessing"]))
    elif args.images:
        folder = Path(args.images)
        files = (
            sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if folder.is_dir()
            else []
        )
        if not files:
            raise LayerLabError(
                f"no images in {folder}: pass a folder of PNG or JPEG files with --images."
            )
        x, read, _ = image_tensor(
            meta, [(p.name, p.read_bytes()) for p in files[: explain.MAX_EXPLAIN_ROWS]]
        )
        names = [files[i].stem for i in read]
    else:
        x = dataset.split(args.split)[0][: args.count]
    if args.method == "attention":
        maps = [
            explain.attention_maps(model, meta, x[i : i + 1])
            for i in range(min(len(x), explain.MAX_EXPLAIN_ROWS))
        ]
        atomic_write_json(out / "attention.json", maps)
        print(json.dumps({"method": "attention", "rows": len(maps), "out": str(out / "attention.json"),
                          "layers": [layer["name"] for layer in maps[0]["layers"]] if maps else []}))  # fmt: skip
        return 0
    base = explain.training_mean(dataset) if explain.kind(meta) == "table" else None
    result = explain.explain_rows(model, meta, x, args.method, target=target, layer=args.layer, baseline=base,
                                  originals=originals)  # fmt: skip
    written = []
    for i, png in enumerate(result.pop("overlays", None) or []):
        written.append(out / f"{names[i] if names else f'{args.split}_{i}'}.png")
        atomic_write_bytes(written[-1], png)
    atomic_write_json(out / "attributions.json", result)
    print(json.dumps({"method": args.method, "rows": len(result["rows"]), "out": str(out),
                      "images": [str(p) for p in written], "completeness_gap": result["delta"]}))  # fmt: skip
    return 0


def option_settings() -> dict[str, list[str]]:
    """Each optimizer's and schedule's own settings (TrainConfig fields), with who takes them."""
    from engine.train.options import OPTIMIZERS, SCHEDULES

    users: dict[str, list[str]] = {}
    for option in (*OPTIMIZERS.values(), *SCHEDULES.values()):
        for name in option.settings:
            users.setdefault(name, []).append(option.name)
    return users


def _data_and_model(t) -> None:
    """The flags that say what to train on and how (train, search and lr-find share them)."""
    from engine.train.config import TrainConfig
    from engine.train.options import LOSSES, OPTIMIZERS, SCHEDULES

    t.add_argument(
        "--data",
        required=True,
        help="a table (CSV, TSV, Parquet, Excel .xlsx, JSON Lines), or a zip or "
        "tar of images in one folder per class, MNIST idx files or CIFAR-10 "
        "python batches",
    )
    t.add_argument(
        "--text-column",
        action="append",
        help="a column of free text (repeat for more): its tokens "
        "become an input of their own; the other columns follow the suggested plan, so with numbers beside "
        "the text the model has two inputs",
    )
    t.add_argument("--target", help="the column to predict (tables)")
    t.add_argument(
        "--image-size", type=int, default=32, help="images: resize to this many pixels square"
    )
    t.add_argument("--grayscale", action="store_true", help="images: one channel instead of RGB")
    t.add_argument(
        "--task",
        choices=["classification", "regression", "forecast", "language_model", "vae", "gan"],
        help="override the detected task; forecast: --target is a series to forecast (see the forecasting flags); "
        "language_model: learn to write like the text in --data (a text file, or a table's --text-column); "
        "vae: a variational autoencoder of the images or rows (a table's --target is left out of its inputs and "
        "colours the latent map); gan: a generator and a discriminator of the images or rows (2-D points with "
        "labelled modes are scored by the modes the generated points cover)",
    )
    gn = t.add_argument_group("GAN (with --task gan; --lr is the discriminator's rate)")
    gn.add_argument("--g-lr", type=float, help="the generator's learning rate (default: --lr)")
    gn.add_argument(
        "--d-steps", type=int, help="discriminator steps per generator step (default 1)"
    )
    gn.add_argument(
        "--gan-loss",
        choices=["non_saturating", "minimax"],
        help="the generator's loss (default non_saturating: strong gradients while it is poor)",
    )
    v = t.add_argument_group("variational autoencoder (with --task vae)")
    v.add_argument("--beta", type=float, help="the KL term's weight (default 1)")
    v.add_argument(
        "--kl-warmup",
        type=int,
        metavar="EPOCHS",
        help="raise the KL weight from 0 to β over these epochs",
    )
    lm = t.add_argument_group("language model (with --task language_model)")
    lm.add_argument(
        "--tokens", choices=["char", "word"], help="characters (default) or words and punctuation"
    )
    lm.add_argument(
        "--context", type=int, help="tokens the model reads to predict the next one (default 64)"
    )
    f = t.add_argument_group("forecasting (with --task forecast)")
    f.add_argument(
        "--time-column", help="the column of dates or times (default: the rows are in time order)"
    )
    f.add_argument("--window", type=int, help="steps of history each forecast reads (default 24)")
    f.add_argument("--horizon", type=int, help="steps ahead to forecast (default 6)")
    f.add_argument("--stride", type=int, help="steps between one window and the next (default 1)")
    f.add_argument(
        "--season",
        type=int,
        help="the season's length in steps (24 for hours of a day): adds the seasonal naive baseline",
    )
    f.add_argument(
        "--covariate", action="append", help="another column the model reads (repeat for more)"
    )
    f.add_argument(
        "--no-scale",
        action="store_true",
        help="keep the series' own units (default: scale each column)",
    )
    t.add_argument("--spec", help="model spec JSON (default: the starter model for the data)")
    t.add_argument(
        "--epochs",
        type=int,
        help="default: what the proposed model for the data is meant to train "
        "with (e.g. 200 on a few hundred rows, 10 on 40,000 or more)",
    )
    t.add_argument(
        "--batch-size", type=int, help="default: 32, or every training row when there are fewer"
    )
    t.add_argument("--lr", type=float, help="default: the proposed model's (0.001 for most)")
    t.add_argument(
        "--optimizer",
        default="adam",
        choices=list(OPTIMIZERS),
        help="; ".join(f"{o.name}: {o.description}" for o in OPTIMIZERS.values()),
    )
    t.add_argument(
        "--loss",
        default=None,
        choices=list(LOSSES),
        help="default: the usual one for the task; "
        + "; ".join(f"{loss.name}: {loss.description}" for loss in LOSSES.values()),
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    g = t.add_argument_group("schedule, early stopping and regularization (defaults: off)")
    g.add_argument(
        "--scheduler",
        choices=list(SCHEDULES),
        help="; ".join(f"{s.name}: {s.description}" for s in SCHEDULES.values()),
    )
    for name, users in option_settings().items():  # an optimizer's or a schedule's own settings
        field = TrainConfig.model_fields[name]
        kind = {"type": field.annotation} if field.annotation is not bool else {
            "action": argparse.BooleanOptionalAction}  # fmt: skip
        g.add_argument(f"--{name.replace('_', '-')}", **kind,
                       help=f"{'/'.join(users)}: {field.description} (default {field.default})")  # fmt: skip
    g.add_argument(
        "--early-stopping",
        type=int,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without improvement, keeping the best weights",
    )
    g.add_argument(
        "--monitor",
        choices=["val/loss", "val/accuracy", "val/mae"],
        help="what early stopping watches",
    )
    g.add_argument("--min-delta", type=float, help="the least change that counts as an improvement")
    g.add_argument("--l1", type=float, help="L1 penalty on the weight matrices")
    g.add_argument("--l2", type=float, help="L2 penalty on the weight matrices")
    g.add_argument(
        "--weight-decay", type=float, help="decoupled (AdamW) or L2-style (others) weight decay"
    )
    g.add_argument(
        "--clip-grad-norm", type=float, help="rescale gradients to at most this total norm"
    )
    g.add_argument("--clip-grad-value", type=float, help="clamp each gradient to +/- this")
    g.add_argument("--accumulate", type=int, metavar="N", help="batches per optimizer step")
    g.add_argument(
        "--class-weights", action="store_true", default=None, help="weight classes by rarity"
    )
    g.add_argument("--label-smoothing", type=float, help="classification: e.g. 0.1")
    s = t.add_argument_group("speed and diagnostics")
    s.add_argument(
        "--precision",
        choices=["auto", "32", "bf16", "16"],
        help="auto (default): bf16 on a CUDA GPU, 32 elsewhere; 16 is fp16 (CUDA only)",
    )
    s.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    s.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels-last image batches (default: on for images on a CUDA GPU)",
    )
    s.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        default=None,
        help="skip the sampled gradient norms and histograms",
    )
    d = t.add_argument_group("split")
    d.add_argument(
        "--val-split", type=float, help="the share of rows to validate on (default 0.15; 0.05-0.5)"
    )
    d.add_argument(
        "--test-split", type=float, help="the share of rows held out for testing (default 0.15)"
    )


def search_samplers():
    from engine.search import SAMPLERS

    return SAMPLERS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description="LayerLab, headless.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="prepare a data file and train a model on it")
    _data_and_model(t)
    t.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="k-fold cross-validation: K runs (stratified for classes) in --out/fold-1..K, whose validation "
        "rows partition the non-test rows; the last line holds each metric's mean and standard deviation",
    )
    t.add_argument(
        "--learning-curve",
        action="store_true",
        help="would more data help? four runs on 10, 25, 50 and 100%% of the training rows in --out/share-N, "
        "scored on their rows and the validation split; the last line holds the curve and a verdict",
    )
    t.add_argument(
        "--drop-rows",
        metavar="ROWS",
        help="train without these training rows (positions in the training split): a comma list, or the JSON "
        "that `dynamics --out` writes (its likely mislabelled rows)",
    )
    t.add_argument("--out", required=True, help="run folder to write")
    w = t.add_argument_group("where it runs (default: this process)")
    _where(w)
    w.add_argument(
        "--emit-launch",
        choices=["torchrun", "slurm", "kubernetes", "all"],
        help="write the files that start the run on several machines into --out, and start nothing",
    )
    w.add_argument(
        "--nodes", type=int, metavar="M", help="with --emit-launch: machines (--nproc on each)"
    )
    se = sub.add_parser(
        "search",
        help="search training options and layer settings with Optuna: each trial is a run",
    )
    _data_and_model(se)
    se.add_argument("--space", required=True,
                    help='a JSON file mapping a training option or LAYER.SETTING to a range or choices, e.g. '
                    '{"lr": {"low": 1e-4, "high": 0.1, "log": true}, "batch_size": {"choices": [16, 32, 64]}, '
                    '"dense_1.out_features": {"low": 8, "high": 128}}')  # fmt: skip
    se.add_argument("--trials", type=int, default=20, help="trials in all (default 20)")
    se.add_argument("--workers", type=int, default=1,
                    help="worker processes sharing the study (the run queue places their runs)")  # fmt: skip
    se.add_argument(
        "--metric", help="the validation metric to optimize (default val/accuracy or val/mae)"
    )
    se.add_argument(
        "--direction", choices=["minimize", "maximize"], help="default: from the metric"
    )
    se.add_argument("--sampler", default="tpe", choices=list(search_samplers()), help="default tpe")
    se.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    se.add_argument("--name", help="the study's name (default: the --out folder's)")
    se.add_argument("--ray", metavar="ADDRESS",
                    help="run the trials with Ray Tune (its Optuna searcher and ASHA) on the Ray cluster at "
                    "ADDRESS (auto, HOST:6379 or ray://HOST:10001); needs pip install -e '.[ray]'")  # fmt: skip
    se.add_argument("--storage", help="an Optuna storage URL that workers on several machines share (e.g. "
                    "postgresql://…; default: a journal file in --out)")  # fmt: skip
    se.add_argument("--out", required=True, help="the study folder to write (journal, study.json)")
    lf = sub.add_parser(
        "lr-find",
        help="the learning-rate range test: sweep the rate on a log scale and print the suggested rate",
    )
    _data_and_model(lf)
    lf.add_argument("--low", type=float, default=1e-7)
    lf.add_argument("--high", type=float, default=10.0)
    lf.add_argument("--steps", type=int, default=200)
    ex = sub.add_parser(
        "explain",
        help="why a run's model predicts what it does: attributions per column, token or pixel (JSON, PNG "
        "overlays), or permutation importance over a split",
    )
    ex.add_argument("run_dir", metavar="RUN_DIR")
    methods = [
        "integrated_gradients",
        "saliency",
        "smoothgrad",
        "gradcam",
        "permutation",
        "attention",
    ]
    ex.add_argument("--method", required=True, choices=methods,
                    help="attention: each attention layer's weights per head, per input (attention.json)")  # fmt: skip
    rows = ex.add_mutually_exclusive_group()
    rows.add_argument("--rows", help="a table of new rows to explain (the training columns)")
    rows.add_argument("--images", help="a folder of images to explain")
    ex.add_argument("--split", default="test", choices=["test", "val", "train"],
                    help="without --rows or --images: explain this split's first --count rows; permutation "
                    "importance is measured on it")  # fmt: skip
    ex.add_argument("--count", type=int, default=8)
    ex.add_argument(
        "--target-class", help="the class to explain (name or index; default: the predicted one)"
    )
    ex.add_argument("--layer", help="Grad-CAM: the conv layer (default: the last one)")
    ex.add_argument(
        "--out", required=True, help="the folder to write attributions.json and overlays into"
    )
    dy = sub.add_parser(
        "dynamics",
        help="a classifier run's training-dynamics map: easy, ambiguous and hard rows, the likely mislabelled ones, "
        "and pinned validation rows epoch by epoch (JSON)",
    )
    dy.add_argument("run_dir", metavar="RUN_DIR")
    dy.add_argument("--pin", help="validation rows to follow epoch by epoch, e.g. 0,5,9 (up to 20)")
    dy.add_argument("--out", help="also write the JSON here (train --drop-rows reads it)")
    ck = sub.add_parser(
        "check",
        help="the will-it-learn check before training: loss at initialization, gradients, samples kept apart, "
        "scales through the layers, overfitting one batch; prints each as JSON, exits 1 when one fails",
    )
    _data_and_model(ck)
    dg = sub.add_parser(
        "diagram",
        help="draw a model's architecture (a spec JSON or a run folder) as SVG or PNG, as the Build page "
        "exports it",
    )
    dg.add_argument("model", metavar="SPEC_OR_RUN")
    dg.add_argument("--out", required=True, help="model.svg or model.png")
    dg.add_argument(
        "--input-shape", help="the input's shape when the spec does not carry it, e.g. 3,32,32"
    )
    dg.add_argument(
        "--part",
        default="generator",
        choices=["generator", "discriminator"],
        help="a GAN's network to draw",
    )
    r = sub.add_parser("resume", help="continue a stopped or killed run from its last checkpoint")
    r.add_argument("run_dir", metavar="RUN_DIR")
    _where(r)
    e = sub.add_parser(
        "evaluate", help="the metrics of a run's final model on its test split, as JSON"
    )
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--split", default="test", choices=["test", "val", "train"])
    x = sub.add_parser(
        "export",
        help="write a run's model as a bundle (zip), ONNX, TorchScript, safetensors or a "
        "state_dict",
    )
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument(
        "--format",
        required=True,
        choices=["bundle", "onnx", "torchscript", "safetensors", "state_dict", *QUANTIZED],
        help="bundle: a zip of model.py, the weights in every format, predict.py, serve.py, train.py, a "
        "Dockerfile, a model card and a manifest; "
        + "; ".join(f"{k}: {v}" for k, v in QUANTIZED.items())
        + " (these print their size, latency and test metric beside the original's)",
    )
    x.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, metavar="PCT",
                   help="a quantized variant whose test metric is worse by more than this %% is flagged")  # fmt: skip
    x.add_argument("--out", required=True, help="the file to write")
    p = sub.add_parser(
        "predict", help="predict new rows (a table) or images (a folder) with a trained model"
    )
    p.add_argument(
        "--model",
        required=True,
        help="a bundle (.zip from the Export page or `export --format bundle`), a "
        "finished run's folder or a LayerLab .safetensors file",
    )
    p.add_argument(
        "--data",
        required=True,
        help="a table in any format the Data page reads, or a folder of images",
    )
    p.add_argument("--out", required=True, help="the CSV to write")
    sv = sub.add_parser(
        "serve",
        help="serve a trained model over HTTP: POST /predict (or /generate), GET /metadata and /health",
    )
    sv.add_argument("model", metavar="MODEL", help="a finished run's folder, a bundle (.zip or unzipped) or a "
                    "LayerLab .safetensors file")  # fmt: skip
    sv.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to answer other machines")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--quiet", action="store_true", help="do not log each request")
    sv.add_argument(
        "--stop-with", type=int, help=argparse.SUPPRESS
    )  # the app's pid: stop when it ends
    gen = sub.add_parser(
        "generate",
        help="write text with a trained language model, or new samples with a VAE or a GAN (PNG images or a CSV)",
    )
    gen.add_argument(
        "run",
        help="a run folder, a bundle .zip or a LayerLab .safetensors of a language model or a VAE",
    )
    gen.add_argument(
        "--n", type=int, default=16, help="a VAE or a GAN: samples to write (default 16)"
    )
    gen.add_argument("--out", help="a VAE or a GAN: the folder to write them into")
    gen.add_argument("--prompt", default="", help="the text to continue")
    gen.add_argument("--length", type=int, default=200, help="tokens to write (default 200)")
    gen.add_argument(
        "--temperature", type=float, default=0.8, help="below 1: more predictable (default 0.8)"
    )
    gen.add_argument(
        "--top-k", type=int, default=20, help="draw from the k likeliest tokens (0: all)"
    )
    gen.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        return {
            "train": _train,
            "resume": _resume,
            "evaluate": _evaluate,
            "export": _export,
            "predict": _predict,
            "serve": _serve,
            "generate": _generate,
            "search": _search,
            "lr-find": _lr_find,
            "check": _check,
            "explain": _explain,
            "dynamics": _dynamics,
            "diagram": _diagram,
        }[args.command](args)
    except LayerLabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (
        KeyboardInterrupt
    ):  # before or after training (during it, Ctrl-C stops the run: see engine.runs)
        print("stopped by Ctrl-C before training began; nothing was kept.", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "error: this ran out of memory. Use fewer rows or columns, smaller images or a smaller model; the "
            'limits LayerLab checks are listed in the README\'s "Safety and limits".',
            file=sys.stderr,
        )
        return 2
    except Exception as e:  # noqa: BLE001 - never a traceback on the command line
        print(f"error: internal error ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
