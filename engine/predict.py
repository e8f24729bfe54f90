"""Predictions on new data with a trained model and the preprocessing saved in its weights file (no Streamlit).

New rows go through exactly the preprocessing fitted in training (`apply_preprocessing`); images are decoded,
resized and scaled as the training images were. The result is a table: the prediction, its confidence and
each class's probability (classification), or the predicted value in the target's own units (regression). A
forecaster reads a table of history and gives the next `horizon` steps.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine.compiler import GraphModel
from engine.data.images import decode_image
from engine.data.store import prediction_meta
from engine.data.tabular import apply_preprocessing
from engine.errors import DataError, LayerLabError
from engine.evaluate import ends_in_squash, outputs
from engine.export import load_model, stored_weights
from engine.gan import NOISE
from engine.limits import DATA_BYTES
from engine.portable import (
    InputError,
    forecast,
    generate,
    generator_samples,
    latent_layer,
    prediction_table,
    prior_samples,
    sample_files,
    with_rows,
)

MAX_SAMPLES = 1000  # samples generated at once
EXPECTED = "a bundle (the .zip from the Export page), a finished run's folder or a LayerLab .safetensors file"


def load_predictor(source: Path | str | bytes, name: str = "") -> tuple[GraphModel, dict]:
    """The model in a bundle, a run folder or a .safetensors file (a path, or an upload's bytes and file name), and
    the data facts it needs: its weights' metadata carries the spec and the preprocessing, in all three."""
    if not isinstance(source, bytes):
        source = Path(source)
        if source.is_dir():  # a run's folder, or an unzipped bundle
            bundled = source / "weights.safetensors"
            source = bundled if bundled.is_file() else source / "model.safetensors"
        if not source.is_file():
            raise LayerLabError(f"no trained model at {source}: pass {EXPECTED}.")
        name = source.name
    data = stored_weights(source, name)
    try:
        model, metadata = load_model(data)
    except LayerLabError:
        raise LayerLabError(f"{name} is not a model LayerLab can read: pass {EXPECTED}.") from None
    if "dataset" not in metadata:
        raise LayerLabError(
            f"{name} carries no preprocessing in its metadata, so new data cannot be prepared "
            "for it: export it from LayerLab again."
        )
    return model, json.loads(metadata["dataset"])


def serving_info(model: GraphModel, meta: dict) -> dict:
    """What prediction needs beyond the model: the data facts (prediction_meta), whether the model reads token
    ids, and whether its outputs are already probabilities. A bundle's preprocessing.json (with labels.json's
    classes) and the service read this."""
    return {**prediction_meta(meta), "takes_tokens": model.takes_tokens,
            "outputs_are_probabilities": ends_in_squash(model), "vae": latent_layer(model) is not None}  # fmt: skip


def _table(model: GraphModel, meta: dict, x: torch.Tensor) -> pd.DataFrame:
    return prediction_table(outputs(model, x), meta, ends_in_squash(model))


def predict_table(model: GraphModel, meta: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """The predictions for each row of `frame` (the training columns, any order; others are ignored), beside
    the rows themselves; for a forecaster, `frame` is the history and the table its forecast."""
    if (meta.get("preprocessing") or {}).get("kind") == "image":
        raise LayerLabError("this model was trained on images: upload images, not a table.")
    if meta.get("task") == "language_model":
        raise LayerLabError(
            "this model generates text: give it a prompt (`python -m engine generate`), not a table."
        )
    if not len(frame):
        raise LayerLabError("the table has no rows to predict.")
    if (meta.get("preprocessing") or {}).get("kind") == "series":
        try:
            return forecast(model, frame, meta)
        except InputError as e:
            raise DataError(str(e)) from None
    need = len(frame) * len(meta.get("feature_names") or []) * 4
    if need > DATA_BYTES.value:
        raise DATA_BYTES.refuse(
            "the table",
            f"{len(frame):,} rows take {DATA_BYTES.describe(need)} once encoded",
            "Predict it in parts.",
        )
    x = torch.from_numpy(apply_preprocessing(frame, meta["preprocessing"]))
    return with_rows(_table(model, meta, x), frame, meta["preprocessing"])


def generate_text(model: GraphModel, meta: dict, prompt: str, **options) -> str:
    """Text a language model writes after `prompt` (see `engine.portable.generate` for the options)."""
    if meta.get("task") != "language_model":
        raise LayerLabError(
            "this model does not generate text: it predicts rows or images (`predict`)."
        )
    try:
        return generate(model, meta, prompt, **options)
    except InputError as e:
        raise DataError(str(e)) from None


def noise_size(model: GraphModel) -> int | None:
    """A GAN generator's noise size (it reads one input named `noise`); None for other models."""
    inputs = model.spec.inputs
    return int(inputs[NOISE].shape[0]) if list(inputs) == [NOISE] else None


def new_samples(model: GraphModel, meta: dict, n: int, seed: int = 0) -> torch.Tensor:
    """`n` new samples: a VAE's codes drawn from the prior and decoded, or a GAN generator's from noise."""
    noise = noise_size(model)
    if latent_layer(model) is None and noise is None:
        lm = meta.get("task") == "language_model"
        raise LayerLabError(
            "this model does not generate samples: only a VAE (a model with a Gaussian latent layer) or a GAN's "
            "generator does" + (" (a language model writes text: pass --prompt)." if lm else ".")
        )
    if not 1 <= n <= MAX_SAMPLES:
        raise LayerLabError(f"ask for between 1 and {MAX_SAMPLES:,} samples (got {n}).")
    if noise is not None:
        return generator_samples(model, n, noise, seed)
    return prior_samples(model, n, tuple(meta["input_shape"]), seed)


def generate_samples(model: GraphModel, meta: dict, n: int, seed: int = 0) -> dict[str, bytes]:
    """`new_samples` as files: PNG images or a CSV of rows."""
    return sample_files(new_samples(model, meta, n, seed), meta)


def predict_images(model: GraphModel, meta: dict, files: list[tuple[str, bytes]]) -> pd.DataFrame:
    """Predictions for image files, decoded and resized as the training images were."""
    x, read, errors = image_tensor(meta, files)
    table = _table(model, meta, x).set_axis(read)
    if errors:
        table = table.reindex(range(len(files)))
        table["error"] = [errors.get(i, "") for i in range(len(files))]
    return pd.concat([pd.DataFrame({"file": [name for name, _ in files]}), table], axis=1)


def image_tensor(
    meta: dict, files: list[tuple[str, bytes]]
) -> tuple[torch.Tensor, list[int], dict[int, str]]:
    """Image files decoded and resized as the training images were: (the images that could be read, their
    positions in `files`, the reason per position of each that could not)."""
    prep = meta.get("preprocessing") or {}
    if prep.get("kind") != "image":
        raise LayerLabError(
            "this model was trained on a table: upload rows (CSV, Parquet, Excel, JSON Lines)."
        )
    size, channels = int(meta["input_shape"][-1]), int(meta["input_shape"][0])
    arrays, read, errors = [], [], {}
    for i, (name, data) in enumerate(files):
        try:
            arrays.append(decode_image(data, name, size, grayscale=channels == 1))
            read.append(i)
        except (
            DataError
        ) as e:  # an unreadable file is listed with its reason; the others are predicted
            errors[i] = str(e)
    if files and not arrays:
        raise LayerLabError(
            f"none of the {len(files)} image(s) could be read ({next(iter(errors.values()))})."
        )
    x = (
        torch.from_numpy(np.stack(arrays))
        if arrays
        else torch.zeros((0, channels, size, size), dtype=torch.uint8)
    )
    return x, read, errors


NOVELTY_REFERENCE = 2000  # training images a new one is compared with
NOVELTY_QUANTILE = 0.99


def _flat(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 if x.dtype == torch.uint8 else x.float()).flatten(1)


def novelty_reference(dataset) -> dict:
    """What "like the training images" means for a dataset: up to NOVELTY_REFERENCE training images, and the
    distance from a validation image to its nearest training image that 99% of validation images stay within."""
    train = _flat(dataset.split("train")[0][:NOVELTY_REFERENCE])
    val = _flat(dataset.split("val")[0][:500])
    nearest = torch.cdist(val, train).min(1).values
    return {
        "train": train,
        "limit": float(torch.quantile(nearest, NOVELTY_QUANTILE)) if len(nearest) else math.inf,
    }


def novelty(image: np.ndarray, reference: dict) -> tuple[float, bool]:
    """How far a prepared image (C, H, W, uint8) is from its nearest training image, and whether that is farther
    than real images are: a drawing unlike the training data, whose prediction means little."""
    distance = float(torch.cdist(_flat(torch.from_numpy(image)[None]), reference["train"]).min())
    return distance, distance > reference["limit"]
