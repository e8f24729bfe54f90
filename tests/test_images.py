"""Image archives: class folders in, uint8 tensors out, and every unsafe archive refused by name."""

import io
import json
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from engine.data import images as image_module
from engine.data.builtin import load_builtin
from engine.data.prepare import prepare_images
from engine.errors import DataError
from engine.templates import build
from engine.train import TrainConfig, fit
from tests.conftest import ROOT


def png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def shapes_zip(n: int = 150, extra: dict | None = None, top: str = "shapes/") -> bytes:
    found = load_builtin("shapes", n_samples=n, noise=0.05)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (img, label) in enumerate(zip(found["images"], found["labels"], strict=True)):
            arr = (img.transpose(1, 2, 0) * 255).astype(np.uint8)
            fmt, ext = [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("WEBP", "webp")][i % 4]
            zf.writestr(f"{top}{found['classes'][label]}/{i}.{ext}", png(arr, fmt))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_class_folders_become_uint8_images_and_a_cnn_learns_them():
    data = shapes_zip(600, {"shapes/circle/broken.png": b"\x89PNG not really", "shapes/notes.txt": b"hello",
                            "__MACOSX/._x": b""})
    ds = prepare_images(data, "shapes.zip", size=32)
    assert ds.meta["classes"] == ["circle", "square", "triangle"] and ds.input_shape == (3, 32, 32)
    assert ds.tensors["x_train"].dtype.is_floating_point is False  # stored as uint8
    assert sum(ds.meta["sizes"].values()) == 600
    skipped = " ".join(ds.meta["skipped"])
    assert "broken.png" in skipped and "notes.txt" in skipped and "__MACOSX" not in skipped
    result = fit(build("cifar_cnn", ds.meta), ds, TrainConfig(epochs=6, lr=0.002), emit=lambda e: None)
    # 420 training images, a quarter of them lossy JPEG and WebP: 0.51 measured at seed 0, guessing gives 1/3.
    assert result["metrics"]["val/accuracy"] > 0.45

    gray = prepare_images(data, "shapes.zip", size=16, grayscale=True)
    assert gray.input_shape == (1, 16, 16)


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("cats/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("entries, words", [
    ([("../evil/cat.png", b"x"), ("dogs/a.png", b"x")], "unsafe path '../evil/cat.png'"),
    ([("/etc/cat.png", b"x"), ("dogs/a.png", b"x")], "unsafe path '/etc/cat.png'"),
    ([(_symlink(), b"/etc/passwd"), ("dogs/a.png", b"x")], "symbolic link"),
    ([("cats/bomb.png", b"\0" * (20 * 2**20)), ("dogs/a.png", b"x")], "zip bomb"),
    ([("cats/a.png", b"x")], "1 class folder"),
])
def test_unsafe_or_unusable_archives_are_refused(entries, words, tmp_path):
    with pytest.raises(DataError, match=words) as e:
        prepare_images(_zip(entries), "upload.zip")
    assert "upload.zip" in str(e.value)
    assert not any(tmp_path.iterdir())  # nothing was unpacked anywhere


def test_too_many_entries_and_too_large(monkeypatch):
    data = shapes_zip(30)
    monkeypatch.setattr(image_module, "MAX_ENTRIES", 10)
    with pytest.raises(DataError, match="at most 10"):
        prepare_images(data, "many.zip")
    monkeypatch.setattr(image_module, "MAX_ENTRIES", 50_000)
    monkeypatch.setattr(image_module, "MAX_TOTAL_BYTES", 1000)
    with pytest.raises(DataError, match="would unpack to"):
        prepare_images(data, "big.zip")


def test_an_image_over_the_pixel_limit_is_skipped_and_listed(monkeypatch):
    monkeypatch.setattr(image_module, "MAX_PIXELS", 1100)  # the 32×32 shapes pass, a 40×40 image does not
    big = png(np.zeros((40, 40, 3), np.uint8))
    ds = prepare_images(shapes_zip(60, {"shapes/circle/huge.png": big}), "s.zip", size=8)
    assert any("huge.png" in s and "too large" in s for s in ds.meta["skipped"])


def test_not_a_zip():
    with pytest.raises(DataError, match="not a valid zip"):
        prepare_images(b"plain text", "x.zip")


def test_cli_trains_on_an_image_zip(tmp_path):
    path = tmp_path / "shapes.zip"
    path.write_bytes(shapes_zip(150))
    proc = subprocess.run([sys.executable, "-m", "engine", "train", "--data", str(path), "--image-size", "16",
                           "--epochs", "2", "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.splitlines()[-1])
    assert final["status"] == "completed" and "val/accuracy" in final["metrics"]


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_mnist_idx_files_in_a_zip_gzipped_or_not():
    import gzip
    digits = load_builtin("digits")
    x = (digits["images"][:, 0] * 255).astype(np.uint8)  # (N, 8, 8)
    y = digits["labels"].astype(np.uint8)
    data = _zip([("mnist/train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(x[:1500]))),
                 ("mnist/train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(y[:1500]))),
                 ("mnist/t10k-images-idx3-ubyte", idx_bytes(x[1500:])),
                 ("mnist/t10k-labels-idx1-ubyte", idx_bytes(y[1500:]))])
    ds = prepare_images(data, "mnist.zip")
    assert ds.input_shape == (1, 8, 8) and ds.meta["classes"] == [str(i) for i in range(10)]
    assert sum(ds.meta["sizes"].values()) == len(x)
    result = fit(build("lenet", ds.meta), ds, TrainConfig(epochs=10, lr=0.003), emit=lambda e: None)
    assert result["metrics"]["val/accuracy"] > 0.9
    broken = _zip([("train-images-idx3-ubyte", idx_bytes(x[:50])[:-10]), ("train-labels-idx1-ubyte", idx_bytes(y[:50]))])
    with pytest.raises(DataError, match="truncated"):
        prepare_images(broken, "broken.zip")
