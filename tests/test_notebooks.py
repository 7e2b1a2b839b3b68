"""Each notebook runs under papermill on its own, with small parameters (tiny model, tiny data).

The five notebooks run as parallel papermill processes in one fixture (about half a minute on 2
cores); the tests then look at what each wrote. Static checks (a parameters cell, no stored
outputs, the python3 kernel) need no kernel.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import yaml

from owl import report
from owl.testing import save_tiny_model, write_tiny_data_dir

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["calibrate", "allocate", "prune", "tables", "figures"]
# zeroshot.ipynb is only checked statically here: tests/test_workflow.py runs it (the zeroshot jobs).
STATIC = [*NOTEBOOKS, "zeroshot"]


def read(name: str):
    return nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)


def parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    return cells[0]


def defaults(nb) -> dict:
    """The parameters cell's assignments, evaluated (they are literals)."""
    tree = ast.parse(parameters_cell(nb).source)
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)}


# ---- static ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", STATIC)
def test_notebook_is_thin_clean_and_parametrised(name):
    nb = read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0] is parameters_cell(nb)  # papermill injects its values right after it
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "stored outputs"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    params = defaults(nb)
    assert str(params["out_dir" if "out_dir" in params else "save"]).startswith("../results/")
    assert sum(len(c.source.splitlines()) for c in code) < 60  # the logic lives in owl/


def test_the_python3_kernel_runs_this_python():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    # "python" is replaced by the running interpreter (jupyter_client), so papermill from a venv uses the venv.
    assert spec.argv[0] in ("python", "python3", sys.executable) or Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()


# ---- execution -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebooks")
    model = save_tiny_model(root / "tiny-model")
    data = write_tiny_data_dir(root / "tiny-data")
    small = {"model": str(model), "nsamples": 4, "seqlen": 64, "seed": 0, "dtype": "float32", "device": "cpu"}
    results = root / "synthetic-results"
    for method, ppl in [("dense", 20.0), ("wanda", 40.0), ("wanda_owl", 30.0)]:
        report.write_json(results / method / "result.json", {
            "model": "m", "prune_method": method, "sparsity_ratio": 0.0 if method == "dense" else 0.7, "Hyper_m": 5, "Lamda": 0.08,
            "ppl": {"wikitext2": ppl}, "achieved_sparsity": 0.7, "layer_sparsities": [0.66, 0.74], "layer_achieved_sparsities": [0.66, 0.74],
            "outlier_ratios": [2.0, 1.0]})
    params = {
        "calibrate": {**small, "calib_batch_size": 2, "hyper_ms": [3, 5], "out_dir": str(root / "calibration")},
        # lod_path None: the notebook runs the statistics pass itself
        "allocate": {**small, "lod_path": None, "sparsity_ratio": 0.6, "Hyper_m": 5, "Lamda": 0.1, "out_dir": str(root / "allocation")},
        "prune": {**small, "prune_method": "wanda_owl", "sparsity_ratio": 0.6, "Hyper_m": 5, "Lamda": 0.1, "calib_batch_size": 2,
                  "eval_limit": 2, "save": str(root / "run"), "extra": {"eval_batch_size": 2}},
        "tables": {"results_dir": str(results), "out_dir": str(root / "tables")},
        "figures": {"results_dir": str(results), "out_dir": str(root / "figures")},
    }
    env = {**os.environ, "OWL_DATA_DIR": str(data), "OWL_CACHE_DIR": str(root / "cache"), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}

    def run(name):
        params_file = root / f"{name}.params.yaml"
        params_file.write_text(yaml.safe_dump(params[name]))
        out = root / f"{name}.executed.ipynb"
        # as the rules run them: papermill through owl.notebook_runner (a kernel start that loses the
        # port race of two kernels starting at once is started again)
        proc = subprocess.run([sys.executable, "-m", "owl.notebook_runner", str(REPO / "notebooks" / f"{name}.ipynb"), str(out),
                               "-f", str(params_file)],
                              capture_output=True, text=True, env=env, cwd=root, timeout=600)
        return name, proc, out

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {name: (proc, out) for name, proc, out in pool.map(run, NOTEBOOKS)}
    return root, runs


def _check(executed, name):
    root, runs = executed
    proc, out = runs[name]
    assert proc.returncode == 0, proc.stderr[-4000:]
    nb = nbformat.read(out, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    return root, nb


def test_calibrate_notebook(executed):
    root, _ = _check(executed, "calibrate")
    lod = json.loads((root / "calibration" / "lod.json").read_text())
    assert lod["n_blocks"] == 4 and set(lod["outlier_ratios"]) == {"3", "5"}
    assert Path(lod["stats_path"]) == root / "calibration" / "statistics.pt" and Path(lod["stats_path"]).exists()
    assert (root / "calibration" / "lod.png").exists() and (root / "calibration" / "lod.pdf").exists()


def test_allocate_notebook(executed):
    root, _ = _check(executed, "allocate")
    allocation = json.loads((root / "allocation" / "allocation.json").read_text())
    (point,) = allocation["points"]
    assert point["owl_mean"] == pytest.approx(0.6) and point["owl_max"] - point["owl_min"] == pytest.approx(0.2)
    assert (root / "allocation" / "allocation.png").exists()


def test_prune_notebook(executed):
    root, nb = _check(executed, "prune")
    result = json.loads((root / "run" / "result.json").read_text())
    assert result["prune_method"] == "wanda_owl" and result["Lamda"] == 0.1 and result["eval_windows"] == 2
    assert result["settings"]["eval_batch_size"] == 2  # `extra` reaches PruneSettings
    assert len(result["layer_sparsities"]) == 4
    assert any("WikiText-2 perplexity" in str(o.get("data", {})) for c in nb.cells for o in c.get("outputs", []))


def test_tables_notebook(executed):
    root, nb = _check(executed, "tables")
    text = (root / "tables" / "main.md").read_text()
    assert "| OWL w. Wanda / Wanda | paired ratio |  | 0.750 (n=1) |" in text and "| Dense | - | - | 20.00 |" in text
    assert any("text/markdown" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_figures_notebook(executed):
    root, _ = _check(executed, "figures")
    assert (root / "figures" / "layerwise_m.png").exists() and (root / "figures" / "layerwise_m.pdf").exists()
