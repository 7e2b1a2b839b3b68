"""Names, labels and small helpers shared by the report modules."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

METHOD_ORDER = ("dense", "magnitude", "wanda", "wanda_owl", "sparsegpt", "sparsegpt_owl", "magnitude_owl", "wanda_owl_structure")
METHOD_LABELS = {
    "dense": "Dense",
    "magnitude": "Magnitude",
    "wanda": "Wanda",
    "wanda_owl": "OWL w. Wanda",
    "sparsegpt": "SparseGPT",
    "sparsegpt_owl": "OWL w. SparseGPT",
    "magnitude_owl": "OWL w. Magnitude",
    "wanda_owl_structure": "OWL w. Wanda (mixed N:M)",
}
OWL_BASELINE = {"wanda_owl": "wanda", "sparsegpt_owl": "sparsegpt", "magnitude_owl": "magnitude", "wanda_owl_structure": "wanda"}
# Methods that read no calibration data: their result does not depend on the seed, so they run once.
CALIBRATION_FREE = ("dense", "magnitude")
SWEEP_METHODS = ("wanda", "wanda_owl", "sparsegpt", "sparsegpt_owl")
TABLE_SECTIONS = ("main", "sweep", "zero_shot", "ablation", "zoo")  # zoo: owl.report.zoo
RESULT_FILE = "result.json"
ZERO_SHOT_FILE = "zeroshot.json"  # what a zeroshot job of the workflow writes beside result.json
FIGURE_SECTIONS = ("layerwise", "sweep", "ablation", "zoo")
FIGURE_FORMATS = ("png", "pdf")
PAPER_OWL = (5.0, 0.08)  # the README's LLaMA-7B setting; used to break ties when guessing a spec
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_owl(method: str) -> bool:
    return "_owl" in method


def uses_calibration(method: str) -> bool:
    """Whether a run of ``method`` depends on the calibration windows (hence on the seed)."""
    return method not in CALIBRATION_FREE


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def safe_name(text: str) -> str:
    """A file-name-safe form of a model key or id (``huggyllama/llama-7b`` -> ``huggyllama_llama-7b``)."""
    return _SAFE.sub("_", str(text)).strip("_") or "model"


def close(a, b) -> bool:
    return a is not None and b is not None and not pd.isna(a) and not pd.isna(b) and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def near(column: pd.Series, value) -> np.ndarray:
    """Element-wise :func:`close` of a column against one value, as a boolean array."""
    return np.array([close(x, value) for x in column], dtype=bool)


def pct_change(value, baseline):
    """Percent change of ``value`` against ``baseline`` (numbers or aligned Series); negative is lower."""
    return 100.0 * (value / baseline - 1.0)


def pct(x: float) -> str:
    return f"{100 * float(x):g}%"


def num(x: float) -> str:
    return f"{float(x):g}"


def fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def read_json(path: str | Path) -> dict:
    with open(path) as handle:
        return json.load(handle)


def write_json(path: str | Path, data) -> Path:
    """Write JSON atomically (a reader never sees half a file)."""
    from owl.results import write_json_atomic

    return write_json_atomic(path, data)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (through a temporary file and a rename): never half a table."""
    from owl.results import write_text_atomic

    return write_text_atomic(path, text)
