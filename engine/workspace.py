"""Where LayerLab keeps prepared datasets and runs: ./workspace unless LAYERLAB_HOME says otherwise."""

import json
import os
import tempfile
from pathlib import Path


def home() -> Path:
    path = Path(os.environ.get("LAYERLAB_HOME", "workspace")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file + fsync + os.replace, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2).encode())


def read_json(path: Path, default=None):
    """A workspace JSON file (every one holds an object), or `default` when it is missing, unreadable, damaged
    (not UTF-8, not JSON) or not an object: a damaged file in the workspace costs its own data, not the app."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return default
    return value if isinstance(value, dict) else default


ERROR_LOG = "logs/errors.log"


def record_error(where: str) -> tuple[str, Path]:
    """The exception being handled, with its traceback, appended to the workspace's error log under a short id
    (the page shows the id, never the traceback). Returns the id and the log's path."""
    import secrets
    import time
    import traceback

    error_id = secrets.token_hex(4)
    path = home() / ERROR_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(
            f"--- error {error_id} at {time.strftime('%Y-%m-%d %H:%M:%S')} in {where}\n{traceback.format_exc()}\n"
        )
    return error_id, path
