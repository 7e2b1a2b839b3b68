"""Result files: written atomically, so an interrupted run never leaves a result that looks good."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

RESULT_FILE = "result.json"


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: dict) -> Path:
    """Write ``data`` as JSON (indent 2, a final newline) atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_result(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    with open(path) as handle:
        return json.load(handle)


def software_versions() -> dict:
    import torch
    import transformers

    from owl import __version__

    return {"owl": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
