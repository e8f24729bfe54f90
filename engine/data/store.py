"""Prepared datasets on disk: <home>/datasets/<id>/{data.safetensors, meta.json, preview.csv}."""

import errno
import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file, save_file

from engine.errors import DataError
from engine.workspace import atomic_write_json, home, read_json

SPLITS = ("train", "val", "test")


class ImagePreprocessing(BaseModel):
    """How an image becomes a model input, the one shape for every image dataset (built-in or uploaded):
    decoded to `mode`, resized to size×size, each 0-255 pixel divided by `scale`."""

    kind: Literal["image"] = "image"
    size: int
    mode: Literal["L", "RGB"]
    scale: float = 255.0


def image_preprocessing(shape) -> dict:
    """The preprocessing of images stored as (N, C, H, W)."""
    return ImagePreprocessing(
        size=int(shape[-1]), mode="L" if shape[1] == 1 else "RGB"
    ).model_dump()


class DatasetMeta(BaseModel):
    """A prepared dataset's meta.json: the contract between preparation and everything that reads a
    dataset (model building, training, evaluation, prediction, bundles). Validated when a dataset is
    saved and when it is loaded; the loaded meta stays a plain dict (`Dataset.meta`). Fields a reader
    does not know are kept (`extra="allow"`), so datasets of other versions load."""

    model_config = ConfigDict(extra="allow")
    id: str
    name: str
    source: str = ""
    task: str = Field(
        description="classification, regression, forecast or language_model (engine.tasks)"
    )
    input_shape: list[int] = Field(
        description="One row's shape as the model reads it (C, H, W for images)."
    )
    classes: list | None = Field(None, description="Class names, in output order (classification).")
    feature_names: list[str] | None = None
    sizes: dict[str, int] = Field(description="Rows per split: train, val, test.")
    preprocessing: dict | None = Field(
        None, description="How raw rows or images become inputs (engine.portable reads it)."
    )
    notices: list[str] = Field(default_factory=list)
    created: float | None = None
    hash: str | None = Field(None, description="SHA-256 of the tensors in key order.")
    inputs: dict | None = Field(
        None, description="Named inputs (several-input data): part -> shape."
    )
    vocab_size: int | None = Field(None, description="Token ids are below this (text data).")


def check_meta(meta: dict, where: str) -> dict:
    """`meta` if it is a dataset's meta as `DatasetMeta` describes it; else DataError naming the field."""
    try:
        DatasetMeta.model_validate(meta)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"]) or "meta.json"
        raise DataError(
            f"{where}: its meta.json is damaged ({field}: {first['msg']}). Prepare the data again on "
            "the Data page."
        ) from None
    return meta


class Choices(BaseModel):
    """What a user chooses for preparing data (a series' window, a text's tokens): `parse` gives the choices, or a
    DataError naming the first that is wrong."""

    @classmethod
    def parse(cls, values: dict):
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            first = e.errors()[0]
            raise DataError(
                f"{'.'.join(map(str, first['loc']))}: {first['msg']} (got {first.get('input')!r})."
            ) from None


def require_columns(frame: pd.DataFrame, names) -> None:
    """DataError naming the first of `names` that `frame` lacks, with the columns it has."""
    for name in names:
        if name not in frame.columns:
            raise DataError(
                f"the table has no column '{name}'. Its columns: {', '.join(map(str, frame.columns[:30]))}."
            )


@dataclass
class Dataset:
    path: Path
    meta: dict
    tensors: dict[str, torch.Tensor]

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input_shape"])

    @property
    def num_classes(self) -> int | None:
        return len(self.meta["classes"]) if self.meta.get("classes") else None

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors[f"x_{name}"], self.tensors[f"y_{name}"]


def datasets_dir(root: Path | None = None) -> Path:
    return Path(root) if root else home() / "datasets"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "dataset"


ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8"}


class Staged:
    """A dataset's folder while it is written, with its tensors in `data.safetensors`, memory-mapped: the rows are
    encoded straight into the file (no copy of them in memory, no write of them afterwards). Every split's
    targets, then every split's inputs, each region in split order: `y` and `x` are the whole regions, zeroed."""

    def __init__(
        self, root: Path | None, sizes: dict, x_shape: tuple, x_dtype, y_dtype: np.dtype
    ) -> None:
        base = datasets_dir(root)
        base.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=".incoming-", dir=base))
        n = sum(sizes.values())
        regions = {"y": ((), np.dtype(y_dtype)), "x": (tuple(x_shape), np.dtype(x_dtype))}
        header, begins, offset = {}, {}, 0
        for key, (shape, dtype) in regions.items():
            begins[key] = offset
            for split in SPLITS:
                end = offset + sizes[split] * int(np.prod(shape)) * dtype.itemsize
                header[f"{key}_{split}"] = {
                    "dtype": ST_DTYPES[dtype],
                    "shape": [sizes[split], *shape],
                    "data_offsets": [offset, end],
                }
                offset = end
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
        start = 8 + len(text)
        try:
            with open(self.folder / "data.safetensors", "wb+") as f:
                f.write(len(text).to_bytes(8, "little") + text)
                _reserve(f, start + offset)
                mapped = mmap.mmap(f.fileno(), start + offset)  # outlives the file object
        except BaseException:
            self.discard()
            raise
        self.y, self.x = (
            np.frombuffer(mapped, dtype, n * int(np.prod(shape)), start + begins[key]).reshape(
                n, *shape
            )
            for key, (shape, dtype) in regions.items()
        )

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _reserve(f, size: int) -> None:
    """Grow the file to `size` bytes of zeros with its disk space reserved: a full disk is an error here, not a
    crash (SIGBUS) when a page of the mapping is first written; and pages whose blocks exist fault in faster."""
    try:
        os.posix_fallocate(f.fileno(), 0, size)
    except AttributeError:  # not on this system (macOS): a sparse file
        f.truncate(size)
    except OSError as e:
        f.truncate(0)
        if e.errno == errno.ENOSPC:
            raise DataError(
                f"not enough disk space for the prepared data ({size / 2**20:,.0f} MB) in "
                f"{Path(f.name).parent.parent}. Free some space (delete old runs or datasets) and try again."
            ) from None
        f.truncate(size)  # a file system that cannot reserve: sparse


def save_dataset(
    *,
    name: str,
    source: str,
    task: str,
    x: dict,
    y: dict,
    classes,
    feature_names,
    preprocessing: dict | None,
    notices: list[str],
    preview: pd.DataFrame | None,
    root: Path | None = None,
    extra: dict | None = None,
    meanwhile: Callable[[], dict] | None = None,
    files: Callable[[Path], None] | None = None,
    staged: Staged | None = None,
) -> Dataset:
    """Write the tensors, preview and meta into a folder named by the content hash. `meanwhile` computes more
    meta (e.g. the data-health report) while the file is written and hashed on other threads; `files` writes more
    files into the folder (given its path) before it is moved into place. `staged`: the folder, whose file already
    holds `x` and `y` (views of its regions)."""
    tensors = {}
    for split in SPLITS:
        xv = np.asarray(x[split])  # uint8 images stay uint8 (scaled on the device when training)
        tensors[f"x_{split}"] = torch.from_numpy(
            np.ascontiguousarray(xv, dtype=np.uint8 if xv.dtype == np.uint8 else np.float32)
        )
        yv = np.asarray(y[split])
        tensors[f"y_{split}"] = torch.from_numpy(
            np.ascontiguousarray(
                yv, dtype=np.int64 if task in ("classification", "language_model") else np.float32
            )
        )
    base = datasets_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    staging = staged.folder if staged else Path(tempfile.mkdtemp(prefix=".incoming-", dir=base))
    digest = hashlib.sha256()
    try:
        # Both release the GIL: the hash (which names the folder) and the write run beside `meanwhile`.
        with ThreadPoolExecutor(2) as pool:
            hashed = pool.submit(
                lambda: [digest.update(tensors[k].numpy()) for k in sorted(tensors)]
            )
            written = (
                None
                if staged
                else pool.submit(save_file, tensors, str(staging / "data.safetensors"))
            )
            try:
                more = meanwhile() if meanwhile else {}
            finally:
                hashed.result(), written and written.result()
        if preview is not None:
            preview.head(200).to_csv(staging / "preview.csv", index=False)
        if files is not None:
            files(staging)
        ds_id = f"{_slug(name)}-{digest.hexdigest()[:8]}"
        path = base / ds_id
        meta = {
            "id": ds_id,
            "name": name,
            "source": source,
            "task": task,
            "input_shape": list(tensors["x_train"].shape[1:]),
            "classes": classes,
            "feature_names": feature_names,
            "sizes": {s: int(tensors[f"y_{s}"].shape[0]) for s in SPLITS},
            "preprocessing": preprocessing,
            "notices": notices,
            "created": time.time(),
            "hash": digest.hexdigest(),
            **(extra or {}),
            **more,
        }
        atomic_write_json(staging / "meta.json", check_meta(meta, f"the dataset '{name}'"))
        _move_in(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Dataset(path, meta, tensors)


def _move_in(staging: Path, path: Path) -> None:
    """The staged folder becomes the dataset's: an older one of the same content is set aside first (renames,
    each atomic). When another session moves the same dataset in at the same moment, one rename wins and the
    other session uses the winner's folder: its name is the content's hash, so both hold the same tensors."""
    for _ in range(3):
        if path.exists():  # the same data prepared again: the new folder replaces the old
            old = Path(tempfile.mkdtemp(prefix=".replaced-", dir=path.parent))
            try:
                path.rename(old / "dataset")
            except FileNotFoundError:  # another session set it aside first
                pass
            shutil.rmtree(old, ignore_errors=True)
        try:
            staging.rename(path)
            return
        except OSError:  # another session's folder arrived between the two renames
            if (path / "meta.json").exists():
                return
    raise DataError(
        f"could not store the dataset in {path} (another session keeps writing it). Try again."
    )


def load_dataset(ds_id_or_path: str | Path, root: Path | None = None) -> Dataset:
    path = Path(ds_id_or_path)
    if not (
        path / "meta.json"
    ).is_file():  # not a dataset folder (absolute, or relative to here): a dataset id
        path = datasets_dir(root) / str(ds_id_or_path)
    path = path.resolve()  # runs record this folder, and are read from other working directories
    meta = read_json(path / "meta.json")
    if meta is None:
        raise DataError(
            f"the dataset '{ds_id_or_path}' is not in the workspace any more. Prepare it again on the Data page."
        )
    check_meta(meta, f"the dataset '{ds_id_or_path}'")
    return Dataset(path, meta, load_file(str(path / "data.safetensors")))


def load_meta(ds_id: str, root: Path | None = None) -> dict | None:
    return read_json(datasets_dir(root) / ds_id / "meta.json")


def load_preview(ds_id: str, root: Path | None = None) -> pd.DataFrame | None:
    path = datasets_dir(root) / ds_id / "preview.csv"
    return pd.read_csv(path) if path.exists() else None


def list_datasets(root: Path | None = None) -> list[dict]:
    base = datasets_dir(root)
    metas = (
        [m for m in (read_json(p / "meta.json") for p in base.glob("*")) if m]
        if base.exists()
        else []
    )
    return sorted(metas, key=lambda m: m.get("created", 0), reverse=True)


def prediction_meta(meta: dict) -> dict:
    """The parts of a dataset's meta that a trained model needs at prediction time."""
    keep = (
        "id",
        "name",
        "task",
        "input_shape",
        "inputs",
        "classes",
        "feature_names",
        "preprocessing",
        "vocab",
    )
    return {k: meta.get(k) for k in keep}
