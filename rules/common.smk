# Shared helpers of the OWL workflow: config loading and validation, the run grid, paths, and
# the papermill command every rule uses. Plain Python, evaluated once when Snakemake parses.
import copy
import json
import math
import os
import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.utils import update_config

REPO = Path(workflow.basedir).resolve()
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the workflow imports owl.settings and owl.report

from owl.errors import OwlError  # noqa: E402
from owl.settings import PruneSettings  # noqa: E402
from owl import report  # noqa: E402

SCHEMA_PATH = REPO / "config" / "schema.yaml"
CONDA_ENV = str(REPO / "envs" / "environment.yml")  # used with --sdm conda only
DEFAULT_CONFIG = REPO / "config" / "default.yaml"
DEFAULT_RESOURCES = {
    "calibrate": {"gpu": 0, "mem_mb": 16000, "runtime": 120, "threads": 2},
    "prune": {"gpu": 0, "mem_mb": 16000, "runtime": 240, "threads": 2},
    "report": {"gpu": 0, "mem_mb": 4000, "runtime": 20, "threads": 1},
}
# PruneSettings fields the prune notebook takes as named parameters; other settings go in `extra`.
PRUNE_NOTEBOOK_PARAMS = (
    "model", "prune_method", "sparsity_ratio", "sparsity_type", "Hyper_m", "Lamda", "nsamples", "seqlen", "seed",
    "calib_dataset", "calib_batch_size", "dtype", "device", "cache_dir", "eval_limit", "stats_path", "save",
    "eval_zero_shot", "tasks", "zero_shot_limit", "zero_shot_batch_size",
)
# The zeroshot notebook's named parameters: the same, less what it always sets itself
# (eval_zero_shot=True, eval_dataset=None: no perplexity).
ZEROSHOT_NOTEBOOK_PARAMS = tuple(p for p in PRUNE_NOTEBOOK_PARAMS if p != "eval_zero_shot")
ZEROSHOT_FIXED = {"eval_dataset": None, "eval_zero_shot": True}


def config_error(message):
    """Stop before any job with one line on stderr (Snakemake adds nothing to a SystemExit)."""
    where = f" ({', '.join(str(p) for p in workflow.overwrite_configfiles)})" if workflow.overwrite_configfiles else f" ({DEFAULT_CONFIG})"
    sys.stderr.write(f"OWL config error{where}: {message}\n")
    sys.exit(1)


# ---- load: config/default.yaml unless --configfile is given (never a merge of the two) ----------
# Snakemake's `configfile:` directive would merge default.yaml into every --configfile, so that
# paper.yaml would silently also run the default models. Load it only when no file was given;
# --config key=value overrides still apply on top.
if not workflow.overwrite_configfiles:
    with open(DEFAULT_CONFIG) as _handle:
        _base = yaml.safe_load(_handle)
    update_config(_base, copy.deepcopy(config))
    config.clear()
    config.update(_base)


def _resolve(schema, root):
    while "$ref" in schema:
        ref = schema["$ref"]
        target = root
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def fill_defaults(instance, schema, root, skip=("models",)):
    """Fill in the schema's defaults (top-level sections and their keys; never inside `models`,
    whose entries override the top-level values and must not receive defaults of their own)."""
    schema = _resolve(schema, root)
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve(sub, root)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance and key not in skip:
            fill_defaults(instance[key], sub, root, skip=())


def validate_config(cfg):
    """Schema first (one line naming the key), then what a schema cannot say."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    with open(SCHEMA_PATH) as handle:
        schema = yaml.safe_load(handle)
    error = best_match(Draft202012Validator(schema).iter_errors(cfg))
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".") or "top level"
        config_error(f"{where}: {error.message}")
    fill_defaults(cfg, schema, schema)
    keys = list(cfg["models"])
    labels = [m.get("label", k) for k, m in cfg["models"].items()]
    if len(set(labels)) != len(labels):
        config_error(f"models: labels must differ, got {labels}")
    for section in ("main", "sweep", "ablation", "zero_shot"):
        if cfg.get(section) is None:
            continue
        cfg[section].setdefault("models", keys)
        for key in cfg[section]["models"]:
            if key not in cfg["models"]:
                config_error(f"{section}.models: {key!r} is not a key of models (have {', '.join(keys)})")


validate_config(config)
NAME = config.get("name") or (Path(workflow.overwrite_configfiles[-1]).stem if workflow.overwrite_configfiles else "default")
OUT = f"{config['results_dir']}/{NAME}"


# ---- models: top-level values with per-model overrides -------------------------------------------
def _merged(section, model_cfg):
    return {**config.get(section, {}), **(model_cfg.get(section) or {})}


MODELS = {}
for _key, _m in config["models"].items():
    _resources = {}
    for _kind, _defaults in DEFAULT_RESOURCES.items():
        _resources[_kind] = {**_defaults, **(config["resources"].get(_kind) or {}), **((_m.get("resources") or {}).get(_kind) or {})}
    # A zeroshot job prunes the model again (no perplexity) and then runs the tasks: the model's
    # prune resources plus zero_shot.extra_runtime minutes, unless resources.zeroshot says otherwise.
    _extra = (config["zero_shot"] or {}).get("extra_runtime", 0)
    _resources["zeroshot"] = {**_resources["prune"], "runtime": _resources["prune"]["runtime"] + _extra,
                              **(config["resources"].get("zeroshot") or {}), **((_m.get("resources") or {}).get("zeroshot") or {})}
    MODELS[_key] = {
        "key": _key,
        "id": _m["id"],
        "label": _m.get("label", _key),
        "owl": _merged("owl", _m),
        "calibration": _merged("calibration", _m),
        "settings": _merged("settings", _m),
        "resources": _resources,
    }
    _c = MODELS[_key]["calibration"]
    # The calibration setting, in the statistics' path: what the statistics depend on (the meta
    # that owl.pipeline stores and checks with them). A new setting is a new file, never a reuse.
    MODELS[_key]["calib_tag"] = (f"{_c['calib_dataset']}-n{_c['nsamples']}-len{_c['seqlen']}-seed{_c['seed']}-"
                                 f"{MODELS[_key]['settings'].get('dtype', 'float32')}")


# ---- the grid: one prune run per distinct (model, method, sparsity, M, lambda) ---------------------
def _num(x):
    return f"{float(x):g}"


def run_id(method, sparsity, hyper_m, lamda):
    """Folder name of a run: dense, wanda_s0.7, wanda_owl_s0.7_m5_l0.08."""
    if method == "dense":
        return "dense"
    rid = f"{method}_s{_num(sparsity)}"
    return rid + (f"_m{_num(hyper_m)}_l{_num(lamda)}" if report.is_owl(method) else "")


RUNS = {}  # (model key, run id) -> {"model", "method", "sparsity", "Hyper_m", "Lamda", "zero_shot", "uses_stats"}
# "zero_shot": the point is in the config's zero_shot section, so a zeroshot job (rules/zeroshot.smk)
# evaluates it besides its prune job; the prune job itself never runs zero-shot.


def add_run(model, method, sparsity, hyper_m=None, lamda=None, zero_shot=False):
    owl = MODELS[model]["owl"]
    hyper_m = owl["Hyper_m"] if hyper_m is None else hyper_m
    lamda = owl["Lamda"] if lamda is None else lamda
    sparsity = 0.0 if method == "dense" else float(sparsity)
    key = (model, run_id(method, sparsity, hyper_m, lamda))
    run = RUNS.setdefault(key, {"model": model, "method": method, "sparsity": sparsity,
                                "Hyper_m": float(hyper_m), "Lamda": float(lamda), "zero_shot": False,
                                "uses_stats": report.is_owl(method)})
    run["zero_shot"] = run["zero_shot"] or zero_shot
    return key


for _model in config["main"]["models"]:
    for _method in config["main"]["methods"]:
        add_run(_model, _method, config["main"]["sparsity"])
if config["sweep"]:
    for _model in config["sweep"]["models"]:
        for _method in config["sweep"]["methods"]:
            for _s in config["sweep"]["sparsities"]:
                add_run(_model, _method, _s)
if config["ablation"]:
    _ab = config["ablation"]
    for _model in _ab["models"]:
        for _m in _ab["Hyper_m"]:
            for _l in _ab["Lamda"]:
                add_run(_model, _ab["method"], _ab["sparsity"], _m, _l)
        if _ab["method"] in report.OWL_BASELINE:  # the uniform reference every cell is compared with
            add_run(_model, report.OWL_BASELINE[_ab["method"]], _ab["sparsity"])
if config["zero_shot"]:
    for _model in config["zero_shot"]["models"]:
        for _method in config["zero_shot"]["methods"]:
            add_run(_model, _method, config["zero_shot"]["sparsity"], zero_shot=True)
ZS_RUNS = [key for key, r in RUNS.items() if r["zero_shot"]]


# ---- paths ----------------------------------------------------------------------------------------
CALIB_DIR = f"{OUT}/calibration/{{model}}/{{calib}}"
STATS = f"{CALIB_DIR}/statistics.pt"
LOD = f"{CALIB_DIR}/lod.json"
RUN_DIR = f"{OUT}/runs/{{model}}/{{run}}"
RESULT = f"{RUN_DIR}/result.json"
ZEROSHOT = f"{RUN_DIR}/zeroshot.json"
ALLOC_DIR = f"{OUT}/allocation/{{model}}"
TABLES_DIR = f"{OUT}/tables"
FIGURES_DIR = f"{OUT}/figures"
ABLATION_DIR = f"{OUT}/ablation"
LOGS = f"{OUT}/logs"


def result_path(key):
    model, rid = key
    return RESULT.format(model=model, run=rid)


def zeroshot_path(key):
    model, rid = key
    return ZEROSHOT.format(model=model, run=rid)


def calib_dir(model):
    return CALIB_DIR.format(model=model, calib=MODELS[model]["calib_tag"])


def stats_path(model):
    return STATS.format(model=model, calib=MODELS[model]["calib_tag"])


def lod_path(model):
    return LOD.format(model=model, calib=MODELS[model]["calib_tag"])


# ---- per-job settings -----------------------------------------------------------------------------
def prune_settings(model, rid):
    """The PruneSettings of one prune job, as a dict (checked by PruneSettings.validate at parse time).

    A prune job never runs zero-shot (eval_zero_shot is always False; the key stays so that the
    parameters, a Snakemake rerun trigger, are those of every existing result.json).
    """
    run, m = RUNS[(model, rid)], MODELS[model]
    calib = m["calibration"]
    settings = {
        "model": m["id"],
        "prune_method": run["method"],
        "sparsity_ratio": run["sparsity"],
        "sparsity_type": "unstructured",
        "Hyper_m": run["Hyper_m"],
        "Lamda": run["Lamda"],
        **{k: calib[k] for k in ("nsamples", "seqlen", "seed", "calib_dataset", "calib_batch_size")},
        **m["settings"],
        "stats_path": stats_path(model) if run["uses_stats"] else None,
        "save": RUN_DIR.format(model=model, run=rid),
        "eval_zero_shot": False,
    }
    return settings


def prune_notebook_params(model, rid):
    settings = prune_settings(model, rid)
    params = {k: v for k, v in settings.items() if k in PRUNE_NOTEBOOK_PARAMS}
    params["extra"] = {k: v for k, v in settings.items() if k not in PRUNE_NOTEBOOK_PARAMS}
    return params


def zeroshot_settings(model, rid):
    """The PruneSettings of one zeroshot job: the prune job's (same pruning, deterministic), no
    perplexity (eval_dataset None), zero-shot on the config's tasks."""
    zs = config["zero_shot"]
    return {**prune_settings(model, rid), **ZEROSHOT_FIXED,
            "tasks": list(zs["tasks"]), "zero_shot_limit": zs["limit"], "zero_shot_batch_size": zs["batch_size"]}


def zeroshot_notebook_params(model, rid):
    settings = zeroshot_settings(model, rid)
    params = {k: v for k, v in settings.items() if k in ZEROSHOT_NOTEBOOK_PARAMS}
    params["extra"] = {k: v for k, v in settings.items() if k not in ZEROSHOT_NOTEBOOK_PARAMS and k not in ZEROSHOT_FIXED}
    return params


def calibration_hyper_ms(model):
    ms = set(float(x) for x in MODELS[model]["calibration"]["hyper_ms"])
    ms.add(float(MODELS[model]["owl"]["Hyper_m"]))
    ms.update(r["Hyper_m"] for (k, _), r in RUNS.items() if k == model and report.is_owl(r["method"]))
    return [int(x) if x.is_integer() else x for x in sorted(ms)]


def calibrate_params(model):
    m = MODELS[model]
    calib, settings = m["calibration"], m["settings"]
    return {
        "model": m["id"],
        **{k: calib[k] for k in ("nsamples", "seqlen", "seed", "calib_dataset", "calib_batch_size")},
        "device": settings.get("device"),
        "dtype": settings.get("dtype", "float32"),
        "cache_dir": settings.get("cache_dir"),
        "hyper_ms": calibration_hyper_ms(model),
        "stats_path": stats_path(model),
        "out_dir": calib_dir(model),
    }


# Allocation points of a model: every distinct (sparsity, M, lambda) of its OWL runs, the main
# setting first. One allocate job per model computes them all (no model is loaded).
def allocation_points(model):
    owl = MODELS[model]["owl"]
    main = (float(config["main"]["sparsity"]), float(owl["Hyper_m"]), float(owl["Lamda"]))
    points = {(r["sparsity"], r["Hyper_m"], r["Lamda"]) for (k, _), r in RUNS.items() if k == model and report.is_owl(r["method"])}
    ordered = sorted(points, key=lambda p: (p != main, p))
    return [{"sparsity_ratio": s, "Hyper_m": m, "Lamda": l} for s, m, l in ordered]


ALLOC_MODELS = [m for m in MODELS if allocation_points(m)]


def allocate_params(model):
    m = MODELS[model]
    points = allocation_points(model)
    return {
        "lod_path": lod_path(model),
        "model": m["id"],
        **points[0],
        "points": points,
        "owl_weighting": m["settings"].get("owl_weighting", "blocks"),
        "out_dir": ALLOC_DIR.format(model=model),
    }


def allocation_files():
    return [f"{ALLOC_DIR.format(model=m)}/allocation.json" for m in ALLOC_MODELS]


# ---- what the report notebooks get -----------------------------------------------------------------
def report_spec():
    spec = {"models": [{"key": k, "label": m["label"], "Hyper_m": m["owl"]["Hyper_m"], "Lamda": m["owl"]["Lamda"]}
                       for k, m in MODELS.items()]}
    spec["main"] = {k: config["main"][k] for k in ("sparsity", "models", "methods")}
    spec["sweep"] = copy.deepcopy(config["sweep"])
    spec["ablation"] = copy.deepcopy(config["ablation"])
    zs = config["zero_shot"]
    spec["zero_shot"] = None if not zs else {k: zs[k] for k in ("models", "methods", "sparsity", "tasks")}
    return spec


SPEC = report_spec()


def ablation_runs():
    """Run keys of the ablation grid and of its uniform baseline (e.g. Wanda for OWL w. Wanda) at the
    ablation's sparsity, which the ablation table and heatmap compare every cell with."""
    ab = config["ablation"]
    baseline = report.OWL_BASELINE.get(ab["method"])
    return [key for key, r in RUNS.items()
            if r["model"] in ab["models"] and math.isclose(r["sparsity"], ab["sparsity"])
            and (r["method"] == baseline or (r["method"] == ab["method"]
                 and any(math.isclose(r["Hyper_m"], x) for x in ab["Hyper_m"]) and any(math.isclose(r["Lamda"], x) for x in ab["Lamda"])))]


def run_entries(keys, path=result_path):
    return [{"path": path(k), **{f: RUNS[k][f] for f in ("model", "method", "sparsity", "Hyper_m", "Lamda")}} for k in keys]


def report_params(keys, out_dir, sections, path=result_path):
    return {"runs": run_entries(keys, path), "spec": SPEC, "sections": list(sections), "out_dir": out_dir}


# The tables rule writes the perplexity tables only; the zero-shot table has its own rule
# (rules/zeroshot.smk) and reads zeroshot.json files, so the perplexity tables never wait for it.
PPL_TABLE_SECTIONS = [s for s in report.TABLE_SECTIONS if s != "zero_shot"]


# ---- validate every run's settings before any job ---------------------------------------------------
for (_model, _rid) in RUNS:
    try:
        PruneSettings(**prune_settings(_model, _rid)).validate()
        if RUNS[(_model, _rid)]["zero_shot"]:
            PruneSettings(**zeroshot_settings(_model, _rid)).validate()
    except (OwlError, TypeError) as _err:
        config_error(f"run {_model}/{_rid}: {_err}")


# ---- running a notebook -------------------------------------------------------------------------
# The python that runs Snakemake (a venv's) also runs papermill and, through its `python3` kernel
# spec, the notebooks; with --use-conda / --sdm conda the rule's conda env provides `python`.
def _uses_conda():
    from snakemake.settings.types import DeploymentMethod

    settings = workflow.deployment_settings
    return settings is not None and DeploymentMethod.CONDA in settings.deployment_method


# Both go through the environment, not the shell text, so that the rules' code (a Snakemake rerun
# trigger) does not change with the interpreter's or the checkout's path.
os.environ["OWL_PYTHON"] = "python" if _uses_conda() else sys.executable
os.environ["OWL_REPO"] = str(REPO)
_DATA_ENV = f" OWL_DATA_DIR={shlex.quote(str(Path(config['data_dir']).resolve()))}" if config.get("data_dir") else ""
# Snakemake formats shell strings: {threads} is the job's, {{ }} are literal braces.
ENV_SETUP = (
    'export PYTHONPATH="$OWL_REPO${{PYTHONPATH:+:$PYTHONPATH}}"'
    " OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} MPLBACKEND=Agg" + _DATA_ENV + "; "
)


def to_yaml(params):
    """Parameters as YAML, keys sorted: the text is a Snakemake params value, so it must not depend
    on the order of keys in the config file (a change would rerun the job)."""
    return yaml.safe_dump(params, sort_keys=True, default_flow_style=False)


def papermill(notebook, executed="{log.notebook}", params_file="{params.params_file}", log="{log.log}", yaml_param="yaml"):
    """Shell command: write the rule's parameters (``params.yaml``) to a file and run
    ``notebooks/<notebook>`` with papermill on them, output and errors to the log.

    The executed notebook is a ``log:`` of its rule, so it is kept when the job fails (Snakemake
    deletes a failed job's outputs, not its logs); papermill writes it even when a cell raises.
    """
    return (
        f"mkdir -p \"$(dirname {params_file})\" && printf '%s\\n' {{params.{yaml_param}:q}} > {params_file} && "
        f'"$OWL_PYTHON" -m papermill "$OWL_REPO/notebooks/{notebook}" {executed} -f {params_file} -k python3 '
        f"--log-output --no-progress-bar >> {log} 2>&1"
    )


def wildcard_choices(values):
    return "|".join(re.escape(v) for v in sorted(set(values), key=len, reverse=True)) or "(?!)"


wildcard_constraints:
    model=wildcard_choices(MODELS),
    calib=wildcard_choices(m["calib_tag"] for m in MODELS.values()),
    run=wildcard_choices(rid for _, rid in RUNS),


def prune_runtime(wc):
    """Minutes of a prune job: the model's (zero-shot runs in a zeroshot job of its own)."""
    return res("prune", "runtime", wc.model)


def res(kind, key, model=None):
    """A resource of a job kind, with the per-model override when ``model`` is given."""
    if model is None:
        return {**DEFAULT_RESOURCES[kind], **(config["resources"].get(kind) or {})}[key]
    return MODELS[model]["resources"][kind][key]
