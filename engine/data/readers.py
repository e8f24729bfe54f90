"""Read a table from uploaded bytes: CSV/TSV (delimiter and encoding detected), Parquet, Excel .xlsx, JSON Lines.

The format comes from the file's content, checked against its extension; every failure is a DataError that
names the file and says what to do. Nothing here unpickles or executes anything from the file.
"""

import codecs
import csv
import ctypes
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from engine.errors import DataError
from engine.limits import DATA_BYTES, ENTRY_BYTES, SHEET_STRINGS, TABLE_ROWS, open_zip

MAX_COLUMNS = 2000
MAX_DICTIONARY = (
    1000  # a text column with at most this many distinct values is read as a categorical
)
TEXT_EXTENSIONS = {".csv", ".tsv", ".txt", ".tab"}
EXTENSIONS = TEXT_EXTENSIONS | {".parquet", ".pq", ".xlsx", ".jsonl", ".ndjson"}
DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


@dataclass
class TableSource:
    frame: pd.DataFrame
    format: str
    encoding: str | None = None
    delimiter: str | None = None
    notices: list[str] = field(
        default_factory=list
    )  # what reading changed: renamed repeated column names

    def describe(self) -> str:
        extra = [
            self.encoding,
            DELIMITERS.get(self.delimiter or "", None)
            and f"{DELIMITERS[self.delimiter]}-separated",
        ]
        return " · ".join([self.format, *[e for e in extra if e]])


def sniff_format(data: bytes) -> str:
    """What the bytes hold, from their start: "parquet", "zip", "binary" or "text"."""
    if data[:4] == b"PAR1":
        return "parquet"
    if data[:4] == b"PK\x03\x04":
        return "zip"
    head = data[:65536]
    if b"\x00" in head or sum(b < 9 or 13 < b < 32 for b in head) > len(head) * 0.05:
        return "binary"
    return "text"


def decode_text(data: bytes, name: str, encoding: str | None = None) -> tuple[str, str]:
    """UTF-8 (with or without BOM), else Latin-1; text that is neither is refused."""
    if encoding:
        try:
            return data.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError) as e:
            raise DataError(
                f"'{name}' cannot be read as {encoding} ({e}). Choose another encoding."
            ) from None
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # Latin-1 decodes any byte; C1 control bytes (0x80-0x9f) almost never occur in real Latin-1 text.
    if sum(0x80 <= b <= 0x9F for b in data[:65536]) > 0:
        raise DataError(
            f"'{name}' is neither UTF-8 nor Latin-1 text. Save it as UTF-8 (in Excel: 'CSV UTF-8') "
            "and upload it again."
        )
    return data.decode("latin-1"), "latin-1"


def _validate(data: bytes, encoding: str) -> None:
    """Decode chunk by chunk, keeping nothing: no decoded copy of a large file in memory."""
    decoder = codecs.getincrementaldecoder(encoding)()
    for i in range(0, len(data), 1 << 20):
        decoder.decode(data[i : i + (1 << 20)])
    decoder.decode(b"", final=True)


def detect_encoding(data: bytes, name: str, encoding: str | None = None) -> str:
    """The user's encoding if it fits the bytes; else utf-8-sig, utf-8 or latin-1 (see decode_text)."""
    if encoding:
        try:
            _validate(data, encoding)
            return encoding
        except (UnicodeDecodeError, LookupError) as e:
            raise DataError(
                f"'{name}' cannot be read as {encoding} ({e}). Choose another encoding."
            ) from None
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        _validate(data, "utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return decode_text(data[: 1 << 20], name)[1]  # Latin-1, unless it holds C1 control bytes


def sniff_delimiter(text: str) -> str:
    sample = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        first = sample.splitlines()[0] if sample else ""
        return max(DELIMITERS, key=first.count) if first else ","


def _arrow_csv(data: bytes, sep: str, encoding: str) -> pd.DataFrame | None:
    """pyarrow's multi-threaded CSV reader: numbers as float64/int64 and strings with few distinct values as
    pandas categoricals (dictionary-encoded while parsing, so a million rows of categories cost a few MB).
    None where it cannot read the file as pandas would (quoted newlines, ragged rows, unnamed or repeated
    headers, bytes that are not text in this encoding); pandas' parser then reads it, or says what is wrong."""
    body = memoryview(data)[3:] if data.startswith(b"\xef\xbb\xbf") else memoryview(data)
    try:
        table = pacsv.read_csv(
            pa.py_buffer(body),
            memory_pool=pa.system_memory_pool(),  # freed memory goes back
            read_options=pacsv.ReadOptions(
                encoding="utf8" if encoding.startswith("utf-8") else encoding,
                block_size=_block_size(len(body)),
            ),
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(
                auto_dict_encode=True,
                strings_can_be_null=True,
                auto_dict_max_cardinality=MAX_DICTIONARY,
            ),
        )
        names = (
            table.column_names
        )  # decoded here: a header that is not text in this encoding raises
    except (
        pa.ArrowInvalid,
        pa.ArrowNotImplementedError,
        pa.ArrowTypeError,
        UnicodeDecodeError,
        LookupError,
    ):
        return None
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        return None
    for i, f in enumerate(table.schema):
        kind = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            return None  # not text in this encoding
        if pa.types.is_temporal(f.type):  # dates stay text, as pandas reads them
            table = table.set_column(
                i, f.name, table.column(i).cast(pa.string()).dictionary_encode()
            )
        elif pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            # free text in one piece: picking rows from a column in pieces (a sample, a split) joins the
            # pieces each time (a million rows of text: 30 ms a pick)
            table = table.set_column(i, f.name, table.column(i).combine_chunks())
    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    _return_freed_memory()
    return frame


def _block_size(size: int) -> int:
    """Blocks of about an eighth of the file (1-64 MB): each block gets its own category dictionaries, which are
    merged at the end, so 1 MB blocks (pyarrow's default) cost a million-row table 0.2 s of merging; a few
    blocks per core still keep every core parsing, and the first block, from which column types are inferred,
    sees more rows."""
    return int(min(max(size // 8, 1 << 20), 64 << 20))


def _return_freed_memory() -> None:
    """glibc keeps what the parser's threads freed in per-thread arenas (a few hundred MB for a large file);
    hand it back to the system so that encoding the table does not stack on top of it."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to hand back
        pass


def _read_delimited(
    data: bytes, name: str, sep: str, encoding: str | None
) -> tuple[pd.DataFrame, str]:
    """CSV/TSV: pyarrow first (UTF-8 unless told otherwise; checking the encoding costs nothing extra there),
    pandas' C parser for what pyarrow declines, with the encoding detected from the bytes."""
    guess = encoding or ("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8")
    frame = _arrow_csv(data, sep, guess)
    if frame is not None:
        return frame, guess
    enc = detect_encoding(data, name, encoding)
    if enc != guess:
        frame = _arrow_csv(data, sep, enc)
        if frame is not None:
            return frame, enc
    # pandas' C parser decodes the bytes itself: no second copy of the file as a Python string.
    return pd.read_csv(
        io.BytesIO(data), sep=sep, encoding="utf-8" if enc == "utf-8-sig" else enc
    ), enc


UTF16_BOMS = {codecs.BOM_UTF16_LE: "utf-16-le", codecs.BOM_UTF16_BE: "utf-16-be"}


def _from_utf16(data: bytes, name: str, encoding: str | None) -> tuple[bytes, str | None]:
    """UTF-16 text with a byte-order mark (Excel's "Unicode text") as UTF-8 bytes, which every reader here takes."""
    bom = data[:2]
    if bom not in UTF16_BOMS or (
        encoding and not encoding.lower().replace("_", "-").startswith("utf-16")
    ):
        return data, encoding
    try:
        return data[2:].decode(UTF16_BOMS[bom]).encode("utf-8"), None
    except UnicodeDecodeError as e:
        raise DataError(
            f"'{name}' starts like UTF-16 text but is not ({e.reason} at byte {e.start:,}). Save it "
            "again as CSV UTF-8."
        ) from None


def _check_parquet(data: bytes, name: str) -> None:
    """Rows and bytes from the footer, before any column is read: a footer that declares 10^10 rows is refused
    here, not by running out of memory."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(pa.py_buffer(data)).metadata
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(
            f"'{name}' is not a readable Parquet file ({str(e).splitlines()[0][:120]}). Export it "
            "again."
        ) from None
    if meta.num_rows > TABLE_ROWS.value:
        raise TABLE_ROWS.refuse(
            name, f"it declares {meta.num_rows:,} rows", "Sample or split the table first."
        )
    unpacked = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if unpacked > DATA_BYTES.value:
        raise DATA_BYTES.refuse(
            name,
            f"its columns take {DATA_BYTES.describe(unpacked)} once read",
            "Drop columns or rows first.",
        )


def _check_xlsx(data: bytes, name: str) -> None:
    """A workbook is a zip: its parts are sized (and the archive's expansion checked) before openpyxl unpacks
    anything; the shared strings (every text cell) have a cap of their own."""
    with open_zip(data, name) as zf:
        for info in zf.infolist():
            if info.file_size > ENTRY_BYTES.value:
                raise ENTRY_BYTES.refuse(
                    name,
                    f"its part '{info.filename}' unpacks to {ENTRY_BYTES.describe(info.file_size)}",
                    "Save the sheet as CSV.",
                )
            if (
                info.filename.lower().endswith("sharedstrings.xml")
                and info.file_size > SHEET_STRINGS.value
            ):
                raise SHEET_STRINGS.refuse(
                    name,
                    f"its text cells take {SHEET_STRINGS.describe(info.file_size)}",
                    "Save the sheet as CSV, or drop long text columns.",
                )
        total = sum(i.file_size for i in zf.infolist())
        if total > DATA_BYTES.value:
            raise DATA_BYTES.refuse(
                name,
                f"the workbook unpacks to {DATA_BYTES.describe(total)}",
                "Save the sheet as CSV or Parquet.",
            )


def _repeated_names(source: TableSource, data: bytes) -> None:
    """pandas renames a repeated header ('y', 'y' -> 'y', 'y.1'): say so, with the mapping, instead of silently."""
    if source.delimiter is None:
        return
    try:
        first = next(
            csv.reader(
                io.StringIO(data[: 1 << 20].decode(source.encoding or "utf-8", "replace")),
                delimiter=source.delimiter,
            )
        )
    except (StopIteration, csv.Error):
        return
    first = [
        c.lstrip("\ufeff") for c in first
    ]  # as the parser saw them (trimmed repeats: _unique_names)
    seen: dict[str, int] = {}
    for c in first:
        seen[c] = seen.get(c, 0) + 1
    for col, count in seen.items():
        if count > 1 and col:
            renamed = [col] + [f"{col}.{i}" for i in range(1, count)]
            source.notices.append(
                f"The column name '{col}' appears {count} times in the header: read as "
                f"{', '.join(repr(r) for r in renamed)} (from left to right). Rename the columns in "
                "the file to choose which is which."
            )


def _gunzip(data: bytes, name: str) -> bytes:
    """A gzipped table ('sales.csv.gz'), decompressed within the data budget."""
    import gzip
    import zlib

    from engine.limits import check_ratio, read_bounded

    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            out = read_bounded(gz, DATA_BYTES.value, name, "the table", DATA_BYTES)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"'{name}' is not a readable gzip file ({str(e)[:80]}). Download or compress it again."
        ) from None
    check_ratio(name, "the table", len(out), len(data))
    return out


def read_table(
    data: bytes, filename: str, *, delimiter: str | None = None, encoding: str | None = None
) -> TableSource:
    name = Path(filename).name
    ext = Path(filename).suffix.lower()
    if ext == ".gz" and Path(name[:-3]).suffix.lower() in TEXT_EXTENSIONS | {".jsonl", ".ndjson"}:
        source = read_table(_gunzip(data, name), name[:-3], delimiter=delimiter, encoding=encoding)
        source.format += " (gzipped)"
        return source
    if ext in TEXT_EXTENSIONS or ext in (".jsonl", ".ndjson"):
        if len(data) > DATA_BYTES.value:  # text takes at least its own size once parsed
            raise DATA_BYTES.refuse(
                name,
                f"the file holds {DATA_BYTES.describe(len(data))}",
                "Sample or split it, or save it as Parquet.",
            )
        data, encoding = _from_utf16(data, name, encoding)
    if (
        not data[:65536].strip() and not data.strip()
    ):  # the full check (a copy) only when the start is blank
        raise DataError(
            f"'{name}' is empty. Choose a file with a header row and at least one data row."
        )
    if ext not in EXTENSIONS:
        older = {
            ".xls": "an Excel 97-2003 workbook: open it in Excel and save it as .xlsx (or CSV UTF-8)",
            ".ods": "an OpenDocument sheet: save it as .xlsx or CSV",
            ".numbers": "a Numbers sheet: export it as CSV",
        }.get(ext)
        raise DataError(
            f"'{name}' is {older}."
            if older
            else f"'{name}' has the extension '{ext or '(none)'}', which LayerLab does not read as a table. "
            "Use CSV, TSV, Parquet, Excel .xlsx or JSON Lines (gzipped text too, as .csv.gz)."
        )
    kind = sniff_format(data)
    expected = {".parquet": "parquet", ".pq": "parquet", ".xlsx": "zip"}.get(ext, "text")
    if kind != expected:
        what = {
            "parquet": "a Parquet file",
            "zip": "a zip archive (or an Excel workbook)",
            "binary": "binary data",
            "text": "text",
        }[kind]
        raise DataError(
            f"'{name}' is named {ext} but holds {what}: its contents do not match its extension. "
            "Rename it to its real type, or export the data again."
        )
    try:
        if kind == "parquet":
            _check_parquet(data, name)
            source = TableSource(pd.read_parquet(io.BytesIO(data)), "Parquet")
        elif ext == ".xlsx":
            _check_xlsx(data, name)
            # openpyxl parses the workbook's XML with defusedxml when it is installed (it is a dependency).
            source = TableSource(pd.read_excel(io.BytesIO(data), engine="openpyxl"), "Excel")
        elif ext in (".jsonl", ".ndjson"):
            text, enc = decode_text(data, name, encoding)
            source = TableSource(pd.read_json(io.StringIO(text), lines=True), "JSON Lines", enc)
        else:
            # Delimiters are ASCII: any bytes read as Latin-1 will do for sniffing them.
            sep = delimiter or (
                "\t" if ext in (".tsv", ".tab") else sniff_delimiter(data[:65536].decode("latin-1"))
            )
            frame, enc = _read_delimited(data, name, sep, encoding)
            source = TableSource(frame, "CSV" if sep != "\t" else "TSV", enc, sep)
            _repeated_names(source, data)
    except DataError:
        raise
    except MemoryError:
        raise DATA_BYTES.refuse(
            name, "reading it ran out of memory", "Sample or split the table first."
        ) from None
    except (ValueError, KeyError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        shape = (
            "one JSON object per line"
            if ext in (".jsonl", ".ndjson")
            else "one header row"
            if ext in TEXT_EXTENSIONS
            else "one table"
        )
        raise DataError(
            f"'{name}' could not be read ({(str(e).splitlines() or [type(e).__name__])[0][:200]}). Check "
            f"that it is a valid {ext} file with {shape}."
        ) from None
    except Exception as e:  # noqa: BLE001 - parsers of foreign formats raise their own types; none may escape
        raise DataError(
            f"'{name}' could not be read as {ext} ({type(e).__name__}). Export the data again."
        ) from None
    frame = source.frame
    if frame.shape[1] == 0:
        raise DataError(f"'{name}' has no columns. Choose a file with a header row.")
    if frame.shape[1] > MAX_COLUMNS:
        raise DataError(
            f"'{name}' has {frame.shape[1]:,} columns; LayerLab reads at most {MAX_COLUMNS:,}. Drop "
            "columns you do not need, or reduce the data first."
        )
    if len(frame) > TABLE_ROWS.value:
        raise TABLE_ROWS.refuse(
            name, f"it has {len(frame):,} rows", "Sample or split the table first."
        )
    if len(frame) == 0:
        raise DataError(
            f"'{name}' has a header ({', '.join(map(str, frame.columns[:5]))}) but no data rows. "
            "Add rows below the header."
        )
    frame.columns = _unique_names(source, [str(c).strip() for c in frame.columns])
    if kind == "parquet" or ext in (
        ".jsonl",
        ".ndjson",
    ):  # the formats whose cells can hold lists and objects
        _nested_as_text(source, frame)
    source.frame = frame
    return source


def _unique_names(source: TableSource, names: list[str]) -> list[str]:
    """Column names made unique once spaces are trimmed ('a' and ' a', or 1 and '1' in JSON): a later repeat
    becomes 'a.1', 'a.2', …, as pandas names repeated CSV headers, with a notice."""
    seen, out = set(names), []
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
        if counts[name] == 1:
            out.append(name)
            continue
        k = counts[name] - 1
        while f"{name}.{k}" in seen:
            k += 1
        out.append(f"{name}.{k}")
        seen.add(out[-1])
        source.notices.append(
            f"Two columns are both named '{name}' (once spaces around names are removed): the "
            f"later one is read as '{out[-1]}'. Rename the columns in the file to choose."
        )
    return out


NESTED = (list, tuple, dict, set, np.ndarray)


def _nested_as_text(source: TableSource, frame: pd.DataFrame) -> None:
    """Cells that hold lists or objects (Parquet's list and struct columns, nested JSON) become their JSON text:
    a column of them is then text or categories, as a user can see and plan it."""
    for col in [c for c in frame.columns if frame[c].dtype == object]:
        values = frame[col]
        if not any(isinstance(v, NESTED) for v in values.dropna()):
            continue
        frame[col] = values.map(
            lambda v: (
                json.dumps(
                    v.tolist() if isinstance(v, np.ndarray) else v, default=str, ensure_ascii=False
                )
                if isinstance(v, NESTED)
                else v
            )
        )
        source.notices.append(
            f"Column '{col}' holds lists or objects: each was read as its JSON text."
        )
