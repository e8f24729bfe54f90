"""Every byte and memory budget of LayerLab's readers, in one place, each changeable with an environment variable.

A reader checks its budget from the file's own headers before it reads, and again while it reads (a header can
lie): a refusal names the file, the limit and the variable that changes it. The README's "Safety and limits"
section lists them.
"""

import io
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from engine.errors import DataError

CHUNK = 1 << 20
# the cores this process may use (its CPU affinity, e.g. a container's or Slurm's share)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Limit:
    name: str  # the environment variable that changes it
    default: int
    what: str  # what it bounds, for the README and messages
    unit: str = "bytes"

    @property
    def value(self) -> int:
        raw = os.environ.get(self.name, "").strip().replace("_", "")
        try:
            return int(float(raw)) if raw else self.default
        except ValueError:
            return self.default

    def describe(self, n: int | None = None) -> str:
        n = self.value if n is None else n
        if self.unit != "bytes":
            return f"{n:,} {self.unit}"
        return (
            f"{n / 2**30:,.1f} GiB"
            if n >= 2**30
            else f"{n / 2**20:,.0f} MiB"
            if n >= 2**20
            else f"{n:,} bytes"
        )

    def refuse(self, name: str, found: str, advice: str = "") -> DataError:
        return DataError(
            f"'{name}': {found}, over LayerLab's limit of {self.describe()} ({self.what}). "
            f"{advice + ' ' if advice else ''}To allow more, set {self.name} (now {self.value:,})."
        )


ENTRY_BYTES = Limit("LAYERLAB_MAX_ENTRY_BYTES", 512 * 2**20, "one file unpacked from an archive")
ARCHIVE_BYTES = Limit(
    "LAYERLAB_MAX_ARCHIVE_BYTES", 2 * 2**30, "all files unpacked from one archive"
)
ARCHIVE_ENTRIES = Limit("LAYERLAB_MAX_ARCHIVE_ENTRIES", 50_000, "files in one archive", "files")
RATIO = Limit(
    "LAYERLAB_MAX_EXPANSION",
    200,
    "how many times larger an archive's contents may be than the archive",
    "times",
)
TABLE_ROWS = Limit("LAYERLAB_MAX_ROWS", 20_000_000, "rows in one table", "rows")
DATA_BYTES = Limit(
    "LAYERLAB_MAX_DATA_BYTES",
    4 * 2**30,
    "a dataset in memory: a table as read, its encoded numbers, or images",
)
SHEET_STRINGS = Limit(
    "LAYERLAB_MAX_SHEET_STRINGS_BYTES", 128 * 2**20, "the text of an Excel workbook"
)
ONEHOT = Limit(
    "LAYERLAB_MAX_CATEGORIES", 100, "columns one category column may become (one-hot)", "categories"
)
WEIGHTS_BYTES = Limit(
    "LAYERLAB_MAX_WEIGHTS_BYTES", 4 * 2**30, "a weights file, or the weights in a bundle"
)
IMAGE_SIZE = Limit("LAYERLAB_MAX_IMAGE_SIZE", 512, "the side images are resized to", "pixels")
ALL = (
    ENTRY_BYTES,
    ARCHIVE_BYTES,
    ARCHIVE_ENTRIES,
    RATIO,
    TABLE_ROWS,
    DATA_BYTES,
    SHEET_STRINGS,
    ONEHOT,
    WEIGHTS_BYTES,
    IMAGE_SIZE,
)
SMALL = (
    2**20
)  # entries this small may compress any amount (a blank image): the ratio applies above it


def check_ratio(name: str, what: str, unpacked: int, packed: int) -> None:
    if unpacked > SMALL and unpacked > RATIO.value * max(packed, 1):
        raise RATIO.refuse(
            name,
            f"{what} expands {unpacked / max(packed, 1):,.0f}× ({unpacked:,} bytes from "
            f"{packed:,})",
            "This is how a zip bomb looks; the archive was not unpacked.",
        )


@contextmanager
def open_zip(data: bytes, name: str) -> Iterator[zipfile.ZipFile]:
    """A zip from memory, its entries counted and sized from the central directory before anything is read;
    damaged, encrypted or oddly compressed archives become a DataError naming the file."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if len(infos) > ARCHIVE_ENTRIES.value:
                raise ARCHIVE_ENTRIES.refuse(
                    name, f"it holds {len(infos):,} files", "Split it into smaller archives."
                )
            total = sum(i.file_size for i in infos)
            if total > ARCHIVE_BYTES.value:
                raise ARCHIVE_BYTES.refuse(
                    name,
                    f"it would unpack to {ARCHIVE_BYTES.describe(total)}",
                    "Use fewer or smaller files.",
                )
            check_ratio(name, "the archive", total, len(data))
            yield zf
    except DataError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        zipfile.LargeZipFile,
        struct.error,
        ValueError,
        OSError,
    ) as e:
        # zipfile's parser raises the last three too on damaged offsets (a negative seek, a short header)
        raise DataError(
            f"'{name}' is a damaged zip archive ({str(e)[:120]}). Download or zip it again."
        ) from None
    except NotImplementedError as e:
        raise DataError(
            f"'{name}' uses a zip compression LayerLab cannot read ({str(e)[:80]}). Zip it again with "
            "the usual 'deflate' method."
        ) from None
    except RuntimeError as e:  # zipfile's "File ... is encrypted, password required for extraction"
        if "encrypted" in str(e) or "password" in str(e):
            raise DataError(
                f"'{name}' is encrypted (password-protected). Zip the files again without a "
                "password."
            ) from None
        raise


def read_zip_entry(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo | str, name: str, limit: Limit = ENTRY_BYTES
) -> bytes:
    """One entry's bytes, read in chunks and counted: more than it declares, more than `limit`, or a larger
    expansion than RATIO allows stops the read (a header that lies cannot cost memory)."""
    info = zf.getinfo(info) if isinstance(info, str) else info
    cap = limit.value
    if info.file_size > cap:
        raise limit.refuse(name, f"'{info.filename}' unpacks to {limit.describe(info.file_size)}")
    check_ratio(name, f"'{info.filename}'", info.file_size, info.compress_size)
    out = io.BytesIO()
    with zf.open(info) as f:
        while chunk := f.read(CHUNK):
            out.write(chunk)
            if out.tell() > info.file_size:
                raise DataError(
                    f"'{name}': '{info.filename}' holds more than the {info.file_size:,} bytes its header "
                    "declares; the archive is damaged or hostile and was not read."
                )
    return out.getvalue()


def read_bounded(stream, limit: int, name: str, what: str, budget: Limit) -> bytes:
    """At most `limit` bytes from a file-like stream (a gzip member, a tar entry), read in chunks."""
    out = io.BytesIO()
    while chunk := stream.read(CHUNK):
        out.write(chunk)
        if out.tell() > limit:
            raise budget.refuse(name, f"{what} unpacks to more than {budget.describe(limit)}")
    return out.getvalue()
