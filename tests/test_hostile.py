"""Hostile and broken input: every reader refuses within its budget with a message naming the file, the limit and
how to change it; nothing is left behind; no internal error reaches the user (issue 14)."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from engine.data.prepare import prepare_file, prepare_images
from engine.data.readers import read_table
from engine.data.tabular import prepare_table
from engine.errors import DataError, LayerLabError
from engine.portable import csv_bytes
from tests.conftest import ROOT

BUDGET = 1 << 30  # what a reader may allocate beyond its imports, in the child processes below


def limited(code: str, budget: int = BUDGET) -> subprocess.CompletedProcess:
    """`code` in a child process whose address space is capped at what its imports took plus `budget`: a reader
    that trusted a hostile header would die there with MemoryError instead of refusing."""
    prelude = (
        "import resource, engine.data.prepare, engine.export, engine.predict, engine.transfer\n"
        "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        f"resource.setrlimit(resource.RLIMIT_AS, (size + {budget}, size + {budget}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def capped(code: str) -> str:
    """Run `code` under the memory cap; it must end without an error. Its output."""
    done = limited(code)
    assert done.returncode == 0, (done.stdout, done.stderr[-2000:])
    return done.stdout


def refused(code: str, *words: str) -> str:
    """Run a reader under the memory cap; it must end in a LayerLabError whose message holds `words`."""
    out = capped(
        "from engine.errors import LayerLabError\ntry:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "    print('ACCEPTED')\nexcept LayerLabError as e:\n    print('REFUSED:', e)\n"
    )
    assert "REFUSED:" in out, out
    for w in words:
        assert w in out, (w, out)
    return out


class Zeros(io.RawIOBase):
    """`n` zero bytes as a stream: large entries without holding them in memory."""

    def __init__(self, n: int):
        self.n = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.n)
        b[:k] = bytes(k)
        self.n -= k
        return k


def zeros_zip(
    path: Path, entry: str, size: int, declare: int | None = None, flags: int = 0
) -> None:
    """A zip holding `size` zero bytes under `entry`, deflated; `declare` patches the size its headers claim,
    `flags` its general-purpose bits (bit 0: encrypted)."""
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open(entry, "w", force_zip64=False) as f,
    ):
        for _ in range(size // 2**20):
            f.write(bytes(2**20))
    data = bytearray(buf.getvalue())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    if declare is not None:
        data[local + 22 : local + 26] = declare.to_bytes(4, "little")
        data[central + 24 : central + 28] = declare.to_bytes(4, "little")
    if flags:
        data[local + 6] |= flags
        data[central + 8] |= flags
    path.write_bytes(bytes(data))


# --- memory: each reader refuses within its budget ------------------------------------------------------------


def test_hostile_archives_and_workbooks_are_refused_within_a_memory_cap(tmp_path, workspace):
    def read(fn: str, name: str) -> str:
        return f"{fn}(open({str(tmp_path / name)!r}, 'rb').read(), {name!r})"

    zeros_zip(
        tmp_path / "strings.xlsx", "xl/sharedStrings.xml", 150 * 2**20
    )  # one 150 MB string, 0.15 MB zipped
    refused(
        read("engine.data.readers.read_table", "strings.xlsx"),
        "'strings.xlsx'",
        "LAYERLAB_MAX_EXPANSION",
    )
    zeros_zip(
        tmp_path / "bundle.zip", "weights.safetensors", 100 * 2**20
    )  # a weights "bundle" bomb
    refused(
        read("engine.transfer.read_any_weights", "bundle.zip"),
        "'bundle.zip'",
        "expands",
        "zip bomb",
    )
    zeros_zip(
        tmp_path / "lies.zip", "weights.safetensors", 64 * 2**20, declare=1024
    )  # says 1 KB, inflates to 64 MB
    refused(
        read("engine.predict.load_predictor", "lies.zip"), "'lies.zip' is a damaged zip archive"
    )
    zeros_zip(tmp_path / "locked.zip", "weights.safetensors", 2**20, flags=1)
    refused(read("engine.transfer.read_any_weights", "locked.zip"), "'locked.zip' is encrypted")
    with tarfile.open(
        tmp_path / "bomb.tar.gz", "w:gz", compresslevel=1
    ) as tf:  # one 600 MB entry, 2.7 MB packed
        info = tarfile.TarInfo("cats/big.png")
        info.size = 600 * 2**20
        tf.addfile(info, io.BufferedReader(Zeros(info.size)))
    refused(
        read("engine.data.prepare.prepare_images", "bomb.tar.gz"),
        "'bomb.tar.gz'",
        "LAYERLAB_MAX_ENTRY_BYTES",
    )
    assert not (workspace / "datasets").exists() or not any((workspace / "datasets").iterdir())


def test_wide_categories_and_a_stray_word_in_numbers_do_not_blow_up_the_encoding(tmp_path):
    rng = np.random.default_rng(0)
    n = 200_000
    prices = np.round(rng.uniform(0, 90, n), 2).astype(object)  # ~9,000 distinct values
    prices[17] = "abc"
    frame = pd.DataFrame(
        {"price": prices, "code": [f"c{i % 2_500}" for i in range(n)], "y": rng.integers(0, 2, n)}
    )
    path = tmp_path / "wide.csv"
    frame.to_csv(path, index=False)
    out = capped(
        f"ds = engine.data.prepare.prepare_file(open({str(path)!r}, 'rb').read(), 'wide.csv', 'y', "
        f"root={str(tmp_path / 'ds')!r})\nprint('WIDTH', ds.meta['input_shape'], ds.meta['notices'])\n"
    )
    width = int(out.split("WIDTH [")[1].split("]")[0])
    assert width <= 1 + 100  # the price as one number, the codes capped to the 100 most frequent
    assert "'price': 1 value(s) that are not numbers (such as 'abc', in data row(s) 18)" in out
    assert "'code': 2,500 categories; the 100 most frequent are one-hot encoded" in out
    assert "LAYERLAB_MAX_CATEGORIES" in out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, low = n >> 7, n & 0x7F
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_parquet_rows_are_checked_from_the_footer_before_reading(tmp_path, monkeypatch):
    buf = io.BytesIO()
    pd.DataFrame({"x": np.arange(1000), "y": np.arange(1000) % 2}).to_parquet(buf)
    # A footer that declares 10^10 rows: its row counts (Thrift i64 fields, zigzag varints) rewritten.
    data = buf.getvalue()
    size = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - size : -8].replace(b"\x16" + _varint(2000), b"\x16" + _varint(2 * 10**10))
    (tmp_path / "huge.parquet").write_bytes(
        data[: -8 - size] + footer + len(footer).to_bytes(4, "little") + b"PAR1"
    )
    refused(
        f"engine.data.readers.read_table(open({str(tmp_path / 'huge.parquet')!r}, 'rb').read(), 'huge.parquet')",
        "'huge.parquet': it declares 10,000,000,000 rows",
        "LAYERLAB_MAX_ROWS",
    )
    monkeypatch.setenv("LAYERLAB_MAX_ROWS", "100")
    with pytest.raises(DataError, match=r"'t.parquet': it declares 1,000 rows.*LAYERLAB_MAX_ROWS"):
        read_table(buf.getvalue(), "t.parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_table(
            buf.getvalue()[:40] + buf.getvalue()[-8:], "t.parquet"
        )  # a footer pointing nowhere


@pytest.mark.parametrize(
    "size, words", [(100_000, "over LayerLab's limit of 512 pixels"), (-3, "from 4 to 512")]
)
def test_image_sizes_are_checked_before_anything_is_allocated(tmp_path, size, words):
    from tests.test_images import shapes_zip

    with pytest.raises(DataError, match=words):
        prepare_images(shapes_zip(12), "s.zip", size=size, root=tmp_path)
    assert not any(tmp_path.iterdir())


# --- no internal errors from input -----------------------------------------------------------------------------


def test_an_archive_whose_data_fails_its_checksum_gets_a_message(tmp_path):
    from tests.test_images import shapes_zip

    good = shapes_zip(12)
    first = good.find(b"PK\x03\x04")
    at = (
        first + 30 + int.from_bytes(good[first + 26 : first + 28], "little")
    )  # the first entry's data
    bad = good[: at + 20] + bytes(b ^ 0xFF for b in good[at + 20 : at + 40]) + good[at + 40 :]
    with pytest.raises(DataError, match="'crc.zip' is a damaged zip archive"):
        prepare_images(bad, "crc.zip", root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_an_empty_target_and_infinities_are_explained_not_crashed():
    with pytest.raises(DataError, match="the target 'y' is empty in every row"):
        prepare_table(pd.DataFrame({"x": range(20), "y": [None] * 20}), "y")
    frame = pd.DataFrame(
        {"x": [1.0, np.inf, 3.0, -np.inf] * 10, "z": range(40), "y": [0.5, 1.5, np.inf, 2.0] * 10}
    )
    info = prepare_table(frame, "y", "regression")
    assert (
        sum(len(v) for v in info.y.values()) == 30
    )  # the 10 rows with an infinite target are dropped
    assert all(np.isfinite(v).all() for v in info.x.values())
    text = " ".join(info.notices)
    assert "Dropped 10 row(s) whose target 'y' is infinite" in text
    assert "Column 'x': 20 infinite value(s) (inf or -inf) treated as missing" in text


def test_utf16_tables_and_repeated_column_names_are_read_and_said():
    text = "name\tx\ty\ty\ncafé\t1\t2\t3\nnaïve\t4\t5\t6\n"
    for bom, codec in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        source = read_table(bom + text.encode(codec), "excel.txt")
        assert (
            list(source.frame.columns) == ["name", "x", "y", "y.1"]
            and source.frame["name"][0] == "café"
        )
        assert source.notices == [
            "The column name 'y' appears 2 times in the header: read as 'y', 'y.1' (from left "
            "to right). Rename the columns in the file to choose which is which."
        ]


def test_the_cli_names_bad_sizes_repeated_columns_and_refusals_without_a_traceback(tmp_path):
    def cli(*args):
        done = subprocess.run(
            [sys.executable, "-m", "engine", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
            env={**os.environ, "LAYERLAB_HOME": str(tmp_path / "home")},
        )
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
        return done

    from tests.test_images import shapes_zip

    (tmp_path / "s.zip").write_bytes(shapes_zip(12))
    for size in ("100000", "-3"):
        done = cli(
            "train",
            "--data",
            str(tmp_path / "s.zip"),
            "--image-size",
            size,
            "--out",
            str(tmp_path / "r"),
        )
        assert done.returncode == 2 and "image size" in done.stderr
        assert not (tmp_path / "r").exists()
    (tmp_path / "b.zip").write_bytes(shapes_zip(24, {"shapes/circle/broken.png": b"not an image"}))
    done = cli(
        "train",
        "--data",
        str(tmp_path / "b.zip"),
        "--image-size",
        "8",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "images"),
    )
    assert (
        done.returncode == 0
        and "note: Skipped 1 file(s): " in done.stderr
        and "broken.png" in done.stderr
    )
    rows = "x,y,y\n" + "".join(f"{i},{i % 2},{i % 3}\n" for i in range(60))
    (tmp_path / "dup.csv").write_text(rows)
    done = cli(
        "train",
        "--data",
        str(tmp_path / "dup.csv"),
        "--target",
        "y",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
    )
    assert done.returncode == 0 and "note: The column name 'y' appears 2 times" in done.stderr


# --- verified checkpoints --------------------------------------------------------------------------------------


def test_a_flipped_bit_falls_back_to_the_checkpoint_before_and_old_formats_load(tmp_path, moons):
    from engine.runs import create_run, execute
    from engine.train.checkpoint import MAGIC, PREVIOUS, STATE, load_state, save_state
    from tests.conftest import mlp_spec

    run = create_run(
        mlp_spec(2),
        {"epochs": 2, "batch_size": 64, "lr": 0.01},
        moons.path,
        run_dir=tmp_path / "run",
    )
    execute(run)
    first = load_state(run)
    assert first["notices"] == [] and not (run / PREVIOUS).exists()
    save_state(
        run, {**{k: v for k, v in first.items() if k != "notices"}, "epoch": first["epoch"] + 1}
    )
    latest = load_state(run)
    assert latest["epoch"] == first["epoch"] + 1 and (run / PREVIOUS).exists()
    data = bytearray((run / STATE).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in a tensor
    (run / STATE).write_bytes(bytes(data))
    state = load_state(run)
    assert (
        state["epoch"] < latest["epoch"]
        and "The latest resume checkpoint was damaged" in state["notices"][0]
    )
    (run / PREVIOUS).write_bytes(b"garbage")
    with pytest.raises(
        LayerLabError, match="resume checkpoints of run run are damaged.*branch from"
    ):
        load_state(run)
    # Format 1: a plain torch file, without a checksum and without the keys added later (the coach's memory).
    old = {k: v for k, v in latest.items() if k not in ("coach", "loss_ref", "format", "notices")}
    buf = io.BytesIO()
    torch.save(old, buf)
    (run / STATE).write_bytes(buf.getvalue())
    assert not buf.getvalue().startswith(MAGIC)
    migrated = load_state(run)
    assert (
        migrated["coach"] is None
        and migrated["epoch"] == latest["epoch"]
        and migrated["format"] == 2
    )
    torch.save({k: v for k, v in old.items() if k != "optimizer"}, buf := io.BytesIO())
    (run / STATE).write_bytes(buf.getvalue())
    with pytest.raises(LayerLabError, match=r"\(checkpoint format 1\) lacks optimizer"):
        load_state(run)


# --- signals -----------------------------------------------------------------------------------------------------


def test_sigterm_and_ctrl_c_stop_training_like_stop_and_it_resumes(tmp_path):
    """The CLI trains; SIGTERM ends it as `stopped` with a checkpoint and one line; resume, then Ctrl-C, again."""
    rows = "a,b,y\n" + "".join(
        f"{i % 97 / 97},{i % 89 / 89},{(i % 97 + i % 89) % 2}\n" for i in range(20_000)
    )
    (tmp_path / "t.csv").write_text(rows)
    run = tmp_path / "run"
    env = {**os.environ, "LAYERLAB_HOME": str(tmp_path / "home")}

    def interrupt(args, sig):
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for line in proc.stdout:  # wait until it trains
            if '"batch_end"' in line or '"epoch_end"' in line:
                break
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        return proc.returncode, err, time.monotonic() - sent

    code, err, took = interrupt(
        [
            "train",
            "--data",
            str(tmp_path / "t.csv"),
            "--target",
            "y",
            "--epochs",
            "200",
            "--batch-size",
            "16",
            "--out",
            str(run),
        ],
        signal.SIGTERM,
    )
    assert code == 128 + signal.SIGTERM and "Traceback" not in err and took < 10
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("stopped by SIGTERM: a checkpoint was written; continue with")
    )
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
    code, err, took = interrupt(["resume", str(run)], signal.SIGINT)
    assert code == 128 + signal.SIGINT and "Traceback" not in err and took < 10, err
    assert (
        "stopped by SIGINT" in err
        and json.loads((run / "status.json").read_text())["state"] == "stopped"
    )
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events].count("run_resumed") == 1
    assert [e["status"] for e in events if e["type"] == "run_finished"] == [
        "stopped"
    ]  # the first was cut at resume


# --- concurrency -------------------------------------------------------------------------------------------------


def test_two_sessions_preparing_the_same_upload_at_once_both_get_the_dataset(tmp_path):
    data = ("x,z,y\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(3000))).encode()
    results, errors = [], []
    start = threading.Barrier(4)

    def prepare():
        start.wait()
        try:
            results.append(prepare_file(data, "same.csv", "y", root=tmp_path))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    for _ in range(3):
        threads = [threading.Thread(target=prepare) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert not errors, errors
    assert len({ds.path for ds in results}) == 1
    folder = results[0].path
    assert {p.name for p in folder.iterdir()} >= {
        "data.safetensors",
        "meta.json",
        "source.bin",
        "recipe.json",
    }
    assert [p.name for p in tmp_path.iterdir()] == [
        folder.name
    ]  # nothing staged or set aside is left


# --- downloads ---------------------------------------------------------------------------------------------------


def test_csv_downloads_keep_every_formula_as_text_even_after_a_line_break():
    table = pd.DataFrame(
        {"note": ["x\r=1+1", "ok\n@SUM(A1)", "=2", "-3", "plain"], "n": [1, 2, 3, 4, 5]}
    )
    data = csv_bytes(table)
    lines = data.decode().split("\r\n")
    assert lines[1] == '"x\r\'=1+1",1' and lines[2] == '"ok\n\'@SUM(A1)",2' and lines[3] == "'=2,3"
    back = pd.read_csv(io.BytesIO(data))
    assert back["note"].tolist() == ["x\r'=1+1", "ok\n'@SUM(A1)", "'=2", "'-3", "plain"]


def test_the_readme_lists_every_limit_with_its_default():
    from engine.limits import ALL

    readme = (ROOT / "README.md").read_text()
    for limit in ALL:
        assert f"| `{limit.name}` | {limit.describe(limit.default)} | {limit.what} |" in readme, (
            limit.name
        )


def test_cells_holding_lists_or_objects_are_read_as_their_json_text():
    frame = pd.DataFrame(
        {"tags": [[1, 2], [3]] * 10, "meta": [{"a": 1}, {"b": "é"}] * 10, "y": [0, 1] * 10}
    )
    buf = io.BytesIO()
    frame.to_parquet(buf)
    lines = frame.to_json(orient="records", lines=True, force_ascii=False).encode()
    for data, name in ((buf.getvalue(), "t.parquet"), (lines, "t.jsonl")):
        source = read_table(data, name)
        assert source.frame["tags"].tolist()[:2] == ["[1, 2]", "[3]"], name
        assert (
            source.frame["meta"].tolist()[:2] == ['{"a": 1}', '{"b": "é"}'] or name == "t.parquet"
        )
        assert (
            "Column 'tags' holds lists or objects: each was read as its JSON text."
            in source.notices
        )
        prepare_table(source.frame, "y")  # and they prepare (they were unhashable before)


def test_values_too_large_for_float32_are_refused_by_column_and_odd_targets_noted():
    frame = pd.DataFrame({"x": [1e308, -1e308, 1.0, 2.0] * 10, "z": range(40), "y": [0, 1] * 20})
    with pytest.raises(
        DataError, match="column 'x' holds values too large to compute with .*1e\\+308"
    ):
        prepare_table(frame, "y")
    frame = pd.DataFrame({"z": range(40), "y": [1.5e308, -1.5e308, 2.5, 3.5] * 10})
    with pytest.raises(DataError, match="the target 'y' holds values too large"):
        prepare_table(frame, "y", "regression")
    info = prepare_table(pd.DataFrame({"x": range(40), "y": [f"c{i}" for i in range(40)]}), "y")
    assert "'y' is an unlikely target: every row has its own value, like an ID" in " ".join(
        info.notices
    )
    with pytest.raises(DataError, match=r"only one class \('0'\)"):
        prepare_table(pd.DataFrame({"x": range(20), "y": [0] * 20}), "y")
    with pytest.raises(DataError, match="one JSON object per line"):
        read_table(b'{"a": 1, "y": 0}\n{"a": 2, "y":\n', "t.jsonl")


def test_gzipped_tables_are_read_within_the_budget_and_old_formats_get_advice():
    import gzip

    rows = "a,b,y\n" + "".join(f"{i},{i % 5},{i % 2}\n" for i in range(50))
    source = read_table(gzip.compress(rows.encode()), "sales.csv.gz")
    assert source.frame.shape == (50, 3) and source.format == "CSV (gzipped)"
    from engine.data.images import is_archive

    assert not is_archive("sales.csv.gz") and is_archive("cifar-10-python.tar.gz")
    bomb = gzip.compress(
        b"a,b,y\n" + b"1,2,3\n" * (40 * 2**20 // 6), compresslevel=9
    )  # 40 MB from ~0.1 MB
    with pytest.raises(DataError, match="'big.csv.gz': the table expands .*LAYERLAB_MAX_EXPANSION"):
        read_table(bomb, "big.csv.gz")
    with pytest.raises(DataError, match="'broken.csv.gz' is not a readable gzip file"):
        read_table(b"\x1f\x8b\x08\x00broken", "broken.csv.gz")
    with pytest.raises(
        DataError, match="Excel 97-2003 workbook: open it in Excel and save it as .xlsx"
    ):
        read_table(b"\xd0\xcf\x11\xe0" + bytes(100), "old.xls")


def test_damaged_files_in_the_workspace_cost_their_own_data_not_the_app(workspace, moons):
    """A run's status, train.json and a dataset's meta overwritten with bytes, a list or nothing: lists skip or
    read them as failed, and every page still renders."""
    from engine.data.store import list_datasets
    from engine.runs import create_run, execute, list_runs
    from tests.conftest import mlp_spec
    from tests.test_pages import app, goto

    runs = [create_run(mlp_spec(2), {"epochs": 1}, moons.path) for _ in range(3)]
    execute(runs[0])
    (runs[0] / "status.json").write_bytes(b"\xff\xfe\x00garbage")
    (runs[1] / "status.json").write_text("[1, 2, 3]")
    (runs[2] / "train.json").write_text("")
    other = prepare_file(
        b"a,y\n" + b"".join(b"%d,%d\n" % (i, i % 2) for i in range(40)), "o.csv", "y"
    )
    (other.path / "meta.json").write_bytes(b"\x00\x01")
    assert [d["id"] for d in list_datasets()] == [moons.id]
    states = {r["id"]: r["state"] for r in list_runs()}
    assert states[runs[0].name] == "failed" and states[runs[1].name] == "failed"
    at = app()
    for page in ("data", "build", "train", "evaluate", "predict", "export"):
        goto(at, page)


def test_names_that_repeat_once_trimmed_are_made_unique_with_a_notice():
    source = read_table(
        b"a, a,y\n" + b"".join(b"%d,%d,%d\n" % (i, 2 * i, i % 2) for i in range(30)), "t.csv"
    )
    assert list(source.frame.columns) == ["a", "a.1", "y"]
    assert source.notices == [
        "Two columns are both named 'a' (once spaces around names are removed): the later one "
        "is read as 'a.1'. Rename the columns in the file to choose."
    ]
    prepare_table(source.frame, "y")


def test_a_damaged_dataset_meta_is_refused_with_the_field_named(workspace):
    from engine.data.prepare import prepare_builtin
    from engine.data.store import load_dataset

    dataset = prepare_builtin("moons", n_samples=100)
    meta = json.loads((dataset.path / "meta.json").read_text())
    assert (
        load_dataset(dataset.path).meta == meta
    )  # a meta as this version writes it loads as it is
    (dataset.path / "meta.json").write_text(json.dumps({**meta, "input_shape": "two"}))
    with pytest.raises(DataError, match=r"meta.json is damaged \(input_shape"):
        load_dataset(dataset.path)


def test_damaged_event_lines_are_skipped_and_the_rest_read_through_their_types(moons):
    from engine.runs import create_run, execute, read_events, run_info

    run = create_run({"nodes": [{"id": "out", "op": "linear", "params": {"out_features": 2}}]},
                     {"epochs": 2}, moons.path)  # fmt: skip
    execute(run)
    good = read_events(run)[0]
    with open(run / "events.jsonl", "ab") as f:
        f.write(b"\xff\xfe not json\n[1, 2]\n")
        f.write(
            json.dumps({"type": "epoch_end", "epoch": "two"}).encode() + b"\n"
        )  # wrong field type
        f.write(json.dumps({"type": "a_newer_kind", "detail": 1}).encode() + b"\n")  # unknown: kept
    events = read_events(run)[0]
    assert events[: len(good)] == good and events[len(good) :] == [
        {"type": "a_newer_kind", "detail": 1}
    ]
    assert run_info(run)["state"] == "completed"
