"""Images in: a zip of class folders (cats/..., dogs/...), checked before anything is decoded.

Refused, naming the file: absolute or ../ paths, symlinks, more than MAX_ENTRIES entries, more than
MAX_TOTAL_BYTES uncompressed, or an entry whose expansion ratio exceeds MAX_RATIO (a zip bomb). Nothing is
written to disk: each image is decoded from memory with Pillow. PNG, JPEG, BMP, GIF and WebP only; a corrupt
image, or one over the pixel limit, is skipped and listed, and the rest are used. Pixels are stored as uint8
(the training loop scales them to [0, 1] on the device).
"""

import gzip
import io
import stat
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.errors import DataError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
FORMATS = {"PNG", "JPEG", "BMP", "GIF", "WEBP", "MPO"}
MAX_ENTRIES = 50_000
MAX_TOTAL_BYTES = 2 * 2**30
MAX_RATIO = 200
MAX_PIXELS = 40_000_000  # per image, before resizing


@dataclass
class ImageSet:
    images: np.ndarray            # (N, C, H, W) uint8
    labels: np.ndarray            # (N,) int64
    classes: list[str]
    skipped: list[str] = field(default_factory=list)


def _check_entries(zf: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise DataError(f"'{name}' holds {len(infos):,} entries; LayerLab reads at most {MAX_ENTRIES:,}. Split it "
                        "into smaller archives.")
    total = 0
    for info in infos:
        path = PurePosixPath(info.filename)
        if info.filename.startswith(("/", "\\")) or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise DataError(f"'{name}' contains the unsafe path '{info.filename}' (absolute or with '..'). Rebuild "
                            "the zip from the folder itself.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"'{name}' contains a symbolic link ('{info.filename}'); links are not accepted. Zip the "
                            "real files instead.")
        total += info.file_size
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 2**20:
            raise DataError(f"'{name}': the entry '{info.filename}' expands {info.file_size / info.compress_size:,.0f}"
                            f"× (over {MAX_RATIO}×), as a zip bomb does. The archive was not unpacked.")
    if total > MAX_TOTAL_BYTES:
        raise DataError(f"'{name}' would unpack to {total / 2**30:,.1f} GiB; LayerLab reads at most "
                        f"{MAX_TOTAL_BYTES / 2**30:,.0f} GiB. Use fewer or smaller images.")
    return [i for i in infos if not i.is_dir()]


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
    raw = zf.read(info)
    if not info.filename.endswith(".gz"):
        return raw
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:  # bounded: a gzip bomb stops at the cap
        out = gz.read(MAX_TOTAL_BYTES + 1)
    if len(out) > MAX_TOTAL_BYTES:
        raise DataError(f"'{name}': '{info.filename}' expands beyond {MAX_TOTAL_BYTES / 2**30:,.0f} GiB; not read.")
    return out


def _idx(data: bytes, dims: int, member: str, name: str) -> np.ndarray:
    """An MNIST idx file: magic 0x0000080{dims}, big-endian sizes, then uint8 values."""
    if len(data) < 4 + 4 * dims or data[:3] != b"\x00\x00\x08" or data[3] != dims:
        raise DataError(f"'{name}': '{member}' is not an idx file with {dims} dimension(s) of unsigned bytes.")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"'{name}': '{member}' says {shape} but holds {body.size:,} values; the file is truncated.")
    return body.reshape(shape)


def _read_idx_pairs(zf: zipfile.ZipFile, files: list[zipfile.ZipInfo], name: str) -> ImageSet | None:
    """MNIST-style idx files (images idx3 + labels idx1, optionally gzipped), train and test pairs together."""
    by_kind: dict[str, dict[str, zipfile.ZipInfo]] = {}
    for info in files:
        base = PurePosixPath(info.filename).name.lower().removesuffix(".gz")
        for kind, marker in (("images", "idx3-ubyte"), ("labels", "idx1-ubyte")):
            if base.endswith(marker):
                prefix = base.split("-")[0]  # "train" / "t10k"
                by_kind.setdefault(prefix, {})[kind] = info
    pairs = [v for v in by_kind.values() if len(v) == 2]
    if not pairs:
        return None
    images, labels = [], []
    for pair in pairs:
        x = _idx(_read_member(zf, pair["images"], name), 3, pair["images"].filename, name)
        y = _idx(_read_member(zf, pair["labels"], name), 1, pair["labels"].filename, name)
        if len(x) != len(y):
            raise DataError(f"'{name}': {len(x):,} images but {len(y):,} labels in "
                            f"'{pair['images'].filename}' / '{pair['labels'].filename}'.")
        images.append(x[:, None])
        labels.append(y.astype(np.int64))
    y = np.concatenate(labels)
    classes = [str(c) for c in np.unique(y)]
    lookup = {int(c): i for i, c in enumerate(np.unique(y))}
    return ImageSet(np.concatenate(images), np.array([lookup[int(v)] for v in y], np.int64), classes)


def read_image_zip(data: bytes, name: str, size: int = 32, grayscale: bool = False) -> ImageSet:
    """Class folders of image files, or MNIST idx files (kept at their own size, one channel)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DataError(f"'{name}' is not a valid zip archive. Zip a folder with one sub-folder per class.") from None
    with zf:
        files = _check_entries(zf, name)
        idx = _read_idx_pairs(zf, files, name)
        if idx is not None:
            return idx
        entries = [(i, PurePosixPath(i.filename).parts) for i in files]
        entries = [(i, p) for i, p in entries if not (p[0].startswith("__MACOSX") or p[-1].startswith("."))]
        pictures = [p for _, p in entries if PurePosixPath(p[-1]).suffix.lower() in IMAGE_EXTENSIONS]
        # One shared top folder (a zip of "animals/" holding "cats/", "dogs/") is stripped.
        strip = 1 if pictures and len({p[0] for p in pictures}) == 1 and all(len(p) > 2 for p in pictures) else 0
        skipped, items = [], []
        for info, p in entries:
            if PurePosixPath(p[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(f"{info.filename}: not a PNG, JPEG, BMP, GIF or WebP file")
                continue
            p = p[strip:]
            if len(p) < 2:
                skipped.append(f"{info.filename}: not inside a class folder")
                continue
            items.append((info, p[0]))
        classes = sorted({c for _, c in items})
        if len(classes) < 2:
            raise DataError(f"'{name}' has images in {len(classes)} class folder(s); a classifier needs at least two "
                            "(e.g. cats/ and dogs/ at the top of the zip).")
        mode, channels = ("L", 1) if grayscale else ("RGB", 3)
        images = np.empty((len(items), channels, size, size), np.uint8)
        labels = np.empty(len(items), np.int64)
        n = 0
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for info, cls in items:
                try:
                    with Image.open(io.BytesIO(zf.read(info))) as img:
                        if img.format not in FORMATS:
                            raise UnidentifiedImageError(f"format {img.format}")
                        if img.width * img.height > MAX_PIXELS:
                            raise Image.DecompressionBombError(f"{img.width}×{img.height} pixels")
                        arr = np.asarray(img.convert(mode).resize((size, size), Image.BILINEAR))
                except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning,
                        OSError, ValueError, SyntaxError) as e:
                    skipped.append(f"{info.filename}: unreadable or too large ({str(e)[:80]})")
                    continue
                images[n] = arr[None] if grayscale else arr.transpose(2, 0, 1)
                labels[n] = classes.index(cls)
                n += 1
    if n < 10:
        raise DataError(f"'{name}' has only {n} readable image(s); LayerLab needs at least 10.")
    return ImageSet(images[:n], labels[:n], classes, skipped)
