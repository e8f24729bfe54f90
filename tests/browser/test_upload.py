"""Bring your own data in a real browser: a Latin-1, semicolon-separated CSV is read, planned and prepared; CIFAR-10
as downloaded (a .tar.gz of pickled batches) becomes an image dataset."""

import socket

import numpy as np
import pandas as pd
from playwright.sync_api import expect

from tests.browser.conftest import no_exceptions, settle, shot
from tests.test_images import cifar_archive


def upload(server, page, path) -> None:
    """Open the app, pick the upload tab and choose the file, as a person would."""
    page.goto(server.url)
    settle(page)
    page.get_by_role("tab", name="Upload a file").click()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(path))
    settle(page)


def test_upload_a_semicolon_latin1_csv(server, page, tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame(
        {
            "order_id": [f"A{i:05d}" for i in range(n)],
            "age": rng.normal(40, 10, n).round(1),
            "city": rng.choice(["Zürich", "Málaga", "Oslo"], n),
            "spend": rng.gamma(2, 30, n).round(2),
        }
    )
    df["churned"] = np.where(df["spend"] < 40, "yes", "no")
    df.loc[::17, "age"] = np.nan
    path = tmp_path / "customers.csv"
    path.write_bytes(df.to_csv(index=False, sep=";").encode("latin-1"))

    upload(server, page, path)
    expect(page.get_by_text("read as CSV · latin-1 · semicolon-separated")).to_be_visible()
    expect(page.get_by_text("300 rows × 5 columns")).to_be_visible()
    shot(page, "upload-1-planned")
    page.get_by_role("button", name="Prepare dataset").click()
    settle(page)
    expect(page.get_by_text("In use: customers")).to_be_visible()
    expect(page.get_by_role("tab", name="Upload a file")).to_have_attribute("aria-selected", "true")
    notes = page.locator('[data-testid="stExpander"]', has_text="preparation note(s)")
    notes.locator("summary").click()  # the notes are folded into one line: open it
    expect(
        notes.get_by_role("listitem").filter(has_text="Ignoring 'order_id': looks like an ID")
    ).to_be_visible()
    expect(
        notes.get_by_role("listitem").filter(
            has_text="Column 'age': 18 missing value(s) filled with the median"
        )
    ).to_be_visible()
    expect(page.get_by_text("Data health:")).to_be_visible()
    no_exceptions(page)
    shot(page, "upload-2-prepared")
    # The server answers its own name, not another site's (DNS rebinding): a WebSocket with a foreign Host is refused.
    assert websocket_status(server.url, "evil.example") == 403
    assert websocket_status(server.url, "127.0.0.1") == 101


def websocket_status(url: str, host: str) -> int:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            (
                f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        return int(s.recv(200).split(b" ")[1])


def test_upload_cifar10_as_downloaded(server, page, tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(cifar_archive("tar", 100))
    upload(server, page, path)
    expect(page.get_by_text("CIFAR-10's python batches")).to_be_visible()
    page.get_by_role("button", name="Prepare images").click()
    settle(page)
    expect(page.get_by_text("In use: cifar-10-python")).to_be_visible()
    expect(page.get_by_text("input shape (3, 32, 32)")).to_be_visible()
    no_exceptions(page)
    shot(page, "upload-3-cifar")
