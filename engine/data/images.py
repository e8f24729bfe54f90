"""Images in: an archive (zip or tar) of class folders (cats/..., dogs/...), MNIST's idx files or CIFAR-10's
python batches, checked before anything is decoded.

Refused, naming the file: absolute or ../ paths, links, and anything over the budgets of `engine.limits`
(entries, bytes per entry and in all, the expansion ratio: a zip or tar bomb), checked from the headers and
again while reading, so a header that lies cannot cost memory. Nothing is written to disk: each image is
decoded from memory with Pillow. PNG, JPEG, BMP, GIF and WebP only; a corrupt image, or one over the pixel
limit, is skipped and listed, and the rest are used. CIFAR batches are pickles and are read with
`pickle_walk` (never unpickled). Pixels are stored as uint8 (the training loop scales them to [0, 1] on the
device).
"""

import gzip
import io
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath

import numpy as np

from engine import portable
from engine.data.pickle_walk import read_pickle
from engine.errors import DataError
from engine.limits import (
    ARCHIVE_BYTES,
    ARCHIVE_ENTRIES,
    DATA_BYTES,
    ENTRY_BYTES,
    IMAGE_SIZE,
    check_ratio,
    open_zip,
    read_bounded,
    read_zip_entry,
)
from engine.portable import IMAGE_EXTENSIONS
from engine.progress import Progress, quiet

MIN_IMAGE_SIZE = 4
ARCHIVE_TYPES = ("zip", "tar", "gz", "tgz", "bz2", "xz")  # cifar-10-python.tar.gz, images.zip, …


def is_archive(filename: str) -> bool:
    """An archive of images; a compressed table ('sales.csv.gz') is not one (`engine.data.readers` reads it)."""
    name = filename.lower()
    return name.rsplit(".", 1)[-1] in ARCHIVE_TYPES and not re.search(
        r"\.(csv|tsv|txt|tab|jsonl|ndjson)\.gz$", name
    )


def archive_stem(filename: str) -> str:
    """'cifar-10-python.tar.gz' -> 'cifar-10-python'."""
    return re.sub(
        r"(\.tar)?\.(zip|tar|gz|tgz|bz2|xz)$", "", PurePosixPath(filename).name, flags=re.I
    )


@dataclass
class ImageSet:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    skipped: list[str] = field(default_factory=list)


@dataclass
class _Member:
    filename: str
    size: int
    read: Callable[[], bytes]


def _check_path(path: str, name: str) -> None:
    parts = PurePosixPath(path).parts
    if path.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(
            f"'{name}' contains the unsafe path '{path}' (absolute or with '..'). Rebuild the archive "
            "from the folder itself."
        )


def _zip_members(zf, name: str) -> list[_Member]:
    """Entries of a zip that `engine.limits.open_zip` has counted and sized; each read is bounded again."""
    for info in zf.infolist():
        _check_path(info.filename, name)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(
                f"'{name}' contains a symbolic link ('{info.filename}'); links are not accepted. Zip the "
                "real files instead."
            )
    return [
        _Member(i.filename, i.file_size, partial(read_zip_entry, zf, i, name))
        for i in zf.infolist()
        if not i.is_dir()
    ]


def _tar_members(tf: tarfile.TarFile, name: str, packed: int) -> list[_Member]:
    """Headers are checked one by one as the (possibly gzipped) stream is walked, so a huge or hostile member
    is refused before its contents are decompressed; `packed`: the archive's own size, for the expansion ratio."""
    members, count, total = [], 0, 0
    while (info := tf.next()) is not None:
        count += 1
        _check_path(info.name, name)
        if info.issym() or info.islnk():
            raise DataError(
                f"'{name}' contains a link ('{info.name}'); links are not accepted. Archive the real "
                "files instead."
            )
        if not (info.isfile() or info.isdir()):
            raise DataError(
                f"'{name}' contains '{info.name}', which is not a regular file or folder."
            )
        total += info.size
        if count > ARCHIVE_ENTRIES.value:
            raise ARCHIVE_ENTRIES.refuse(
                name, f"it holds more than {count - 1:,} files", "Split it into smaller archives."
            )
        if info.size > ENTRY_BYTES.value:
            raise ENTRY_BYTES.refuse(
                name, f"'{info.name}' unpacks to {ENTRY_BYTES.describe(info.size)}"
            )
        if total > ARCHIVE_BYTES.value:
            raise ARCHIVE_BYTES.refuse(
                name,
                f"it would unpack to more than {ARCHIVE_BYTES.describe(total)}",
                "Use fewer or smaller files.",
            )
        check_ratio(name, "the archive", total, packed)
        if info.isfile():
            members.append(_Member(info.name, info.size, partial(_tar_read, tf, info, name)))
    return members


def _tar_read(tf: tarfile.TarFile, info: tarfile.TarInfo, name: str) -> bytes:
    with tf.extractfile(info) as f:
        return read_bounded(f, info.size, name, f"'{info.name}'", ENTRY_BYTES)


@contextmanager
def _open_archive(data: bytes, name: str) -> Iterator[list[_Member]]:
    """A zip, or a tar (plain, gzip, bzip2 or xz), checked before anything is decoded; nothing touches disk."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        with open_zip(data, name) as zf:
            yield _zip_members(zf, name)
        return
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError):
        raise DataError(
            f"'{name}' is not a valid zip or tar archive. Zip a folder with one sub-folder per "
            "class."
        ) from None
    with tf:
        try:
            yield _tar_members(tf, name, len(data))
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DataError(f"'{name}' is a damaged tar archive ({str(e)[:80]}).") from None


def _read_member(member: _Member, name: str) -> bytes:
    raw = member.read()
    if not member.filename.endswith(".gz"):
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:  # bounded: a gzip bomb stops at the cap
            out = read_bounded(gz, ENTRY_BYTES.value, name, f"'{member.filename}'", ENTRY_BYTES)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"'{name}': '{member.filename}' is not a readable gzip file ({str(e)[:80]})."
        ) from None
    check_ratio(name, f"'{member.filename}'", len(out), len(raw))
    return out


def _idx(data: bytes, dims: int, member: str, name: str) -> np.ndarray:
    """An MNIST idx file: magic 0x0000080{dims}, big-endian sizes, then uint8 values."""
    if len(data) < 4 + 4 * dims or data[:3] != b"\x00\x00\x08" or data[3] != dims:
        raise DataError(
            f"'{name}': '{member}' is not an idx file with {dims} dimension(s) of unsigned bytes."
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(
            f"'{name}': '{member}' says {shape} but holds {body.size:,} values; the file is truncated."
        )
    return body.reshape(shape)


def _read_idx_pairs(files: list[_Member], name: str) -> ImageSet | None:
    """MNIST-style idx files (images idx3 + labels idx1, optionally gzipped), train and test pairs together."""
    by_kind: dict[str, dict[str, _Member]] = {}
    for member in files:
        base = PurePosixPath(member.filename).name.lower().removesuffix(".gz")
        for kind, marker in (("images", "idx3-ubyte"), ("labels", "idx1-ubyte")):
            if base.endswith(marker):
                prefix = base.split("-")[0]  # "train" / "t10k"
                by_kind.setdefault(prefix, {})[kind] = member
    pairs = [v for v in by_kind.values() if len(v) == 2]
    if not pairs:
        return None
    images, labels = [], []
    for pair in pairs:
        x = _idx(_read_member(pair["images"], name), 3, pair["images"].filename, name)
        y = _idx(_read_member(pair["labels"], name), 1, pair["labels"].filename, name)
        if len(x) != len(y):
            raise DataError(
                f"'{name}': {len(x):,} images but {len(y):,} labels in "
                f"'{pair['images'].filename}' / '{pair['labels'].filename}'."
            )
        images.append(x[:, None])
        labels.append(y.astype(np.int64))
    return _indexed(np.concatenate(images), np.concatenate(labels))


def _indexed(images: np.ndarray, labels: np.ndarray, names: list[str] | None = None) -> ImageSet:
    """Labels renumbered 0..K-1 over the values present; class names from `names` where the file gives them."""
    present, y = np.unique(labels, return_inverse=True)
    classes = [names[c] if names and 0 <= c < len(names) else str(c) for c in present.tolist()]
    return ImageSet(images, y.astype(np.int64), classes)


def _field(record: dict, key: str):
    return record.get(key.encode(), record.get(key))


def _read_cifar_batches(files: list[_Member], name: str) -> ImageSet | None:
    """CIFAR-10's python batches (data_batch_1..5, test_batch, batches.meta): pickles, read by walking their
    opcodes, never unpickled. Each holds `data` (N×3072 uint8, the red, green and blue planes of 32×32 images)
    and `labels`."""
    batches = sorted(
        (
            m
            for m in files
            if re.fullmatch(r"data_batch_\d+|test_batch", PurePosixPath(m.filename).name)
        ),
        key=lambda m: PurePosixPath(m.filename).name,
    )
    if not batches:
        return None
    images, labels = [], []
    for member in batches:
        record = read_pickle(_read_member(member, name), f"{name}: {member.filename}")
        data, y = (
            _field(record, k) if isinstance(record, dict) else None for k in ("data", "labels")
        )
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3072
            or not isinstance(y, list)
            or len(y) != len(data)
        ):
            raise DataError(
                f"'{name}': '{member.filename}' is not a CIFAR-10 batch (expected 'data', N×3072 bytes, "
                "and N 'labels')."
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(y, np.int64))
    names = None
    meta = next((m for m in files if PurePosixPath(m.filename).name == "batches.meta"), None)
    if meta is not None:
        found = _field(
            read_pickle(_read_member(meta, name), f"{name}: {meta.filename}"), "label_names"
        )
        if isinstance(found, list):
            names = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in found
            ]
    return _indexed(np.concatenate(images), np.concatenate(labels), names)


def _read_class_folders(
    files: list[_Member], name: str, size: int, grayscale: bool, progress: Progress = quiet
) -> ImageSet:
    entries = [(m, PurePosixPath(m.filename).parts) for m in files]
    entries = [
        (m, p) for m, p in entries if not (p[0].startswith("__MACOSX") or p[-1].startswith("."))
    ]
    pictures = [p for _, p in entries if PurePosixPath(p[-1]).suffix.lower() in IMAGE_EXTENSIONS]
    # One shared top folder (a zip of "animals/" holding "cats/", "dogs/") is stripped.
    strip = (
        1
        if pictures and len({p[0] for p in pictures}) == 1 and all(len(p) > 2 for p in pictures)
        else 0
    )
    skipped, items = [], []
    for member, p in entries:
        if PurePosixPath(p[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append(f"{member.filename}: not a PNG, JPEG, BMP, GIF or WebP file")
            continue
        p = p[strip:]
        if len(p) < 2:
            skipped.append(f"{member.filename}: not inside a class folder")
            continue
        items.append((member, p[0]))
    classes = sorted({c for _, c in items})
    if len(classes) < 2:
        raise DataError(
            f"'{name}' has images in {len(classes)} class folder(s); a classifier needs at least two "
            "(e.g. cats/ and dogs/ at the top of the archive)."
        )
    need = len(items) * (1 if grayscale else 3) * size * size
    if need > DATA_BYTES.value:
        raise DATA_BYTES.refuse(
            name,
            f"{len(items):,} images of {size}×{size} pixels take {DATA_BYTES.describe(need)}",
            "Choose a smaller image size, or fewer images.",
        )
    images = np.empty((len(items), 1 if grayscale else 3, size, size), np.uint8)
    labels = np.empty(len(items), np.int64)
    n = 0
    for i, (member, cls) in enumerate(items):
        if i % 256 == 0:
            progress(i / len(items), f"Decoding images ({i:,} of {len(items):,})")
        try:
            images[n] = decode_image(member.read(), member.filename, size, grayscale)
        except DataError as e:
            skipped.append(str(e))
            continue
        labels[n] = classes.index(cls)
        n += 1
    return ImageSet(images[:n], labels[:n], classes, skipped)


def decode_image(data: bytes, name: str, size: int, grayscale: bool) -> np.ndarray:
    """One image file as a (channels, size, size) uint8 array (`engine.portable.decode_image`, which a bundle's
    predict.py runs too); DataError if it cannot be read or is too large."""
    try:
        return portable.decode_image(data, name, size, grayscale)
    except portable.InputError as e:
        raise DataError(str(e)) from None


def check_image_size(size: int) -> None:
    """The side images are resized to: from MIN_IMAGE_SIZE to IMAGE_SIZE pixels."""
    if not isinstance(size, int) or size < MIN_IMAGE_SIZE:
        raise DataError(
            f"the image size must be a whole number of pixels from {MIN_IMAGE_SIZE} to "
            f"{IMAGE_SIZE.value:,} (got {size!r}). 32 suits small pictures, 64-128 larger ones."
        )
    if size > IMAGE_SIZE.value:
        raise DataError(
            f"an image size of {size:,} pixels is over LayerLab's limit of {IMAGE_SIZE.describe()} "
            f"({IMAGE_SIZE.what}): one 3-channel image alone would take {3 * size * size / 2**20:,.0f} "
            f"MiB. Choose 32-256, or set {IMAGE_SIZE.name} to allow more."
        )


def read_image_archive(
    data: bytes, name: str, size: int = 32, grayscale: bool = False, progress: Progress = quiet
) -> ImageSet:
    """Class folders of image files, MNIST idx files or CIFAR-10 python batches (the last two keep their own
    size and colour), from a zip or a tar archive."""
    check_image_size(size)
    progress(0.0, f"Opening {name}")
    with _open_archive(data, name) as files:
        found = (
            _read_idx_pairs(files, name)
            or _read_cifar_batches(files, name)
            or _read_class_folders(files, name, size, grayscale, progress)
        )
    if len(found.labels) < 10:
        raise DataError(
            f"'{name}' has only {len(found.labels)} readable image(s); LayerLab needs at least 10."
        )
    return found
