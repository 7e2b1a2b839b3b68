# Shared helpers of the OWL workflow: config loading and validation, the run grid, paths, and
# the papermill command every rule uses. Plain Python, evaluated once when Snakemake parses.
import copy
import os
import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.utils import update_config

REPO = Path(workflow.basedir).resolve()
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the workflow imports owl.grid, owl.settings and owl.report

from owl import grid, report  # noqa: E402
from owl.report import captions  # noqa: E402
from owl.errors import OwlError  # noqa: E402
from owl.settings import PruneSettings  # noqa: E402
from owl.zoo import reported_seeds  # noqa: E402

SCHEMA_PATH = REPO / "config" / "schema.yaml"
CONDA_ENV = str(REPO / "envs" / "environment.yml")  # used with --sdm conda only
DEFAULT_CONFIG = REPO / "config" / "default.yaml"
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


def load_schema():
    with open(SCHEMA_PATH) as handle:
        return yaml.safe_load(handle)


try:
    grid.validate_config(config, load_schema())
except grid.ConfigError as _err:
    config_error(str(_err))
NAME = config.get("name") or (Path(workflow.overwrite_configfiles[-1]).stem if workflow.overwrite_configfiles else "default")
OUT = f"{config['results_dir']}/{NAME}"


# ---- models and the grid (owl/grid.py): one run per grid point and calibration seed ---------------
MODELS = grid.model_specs(config)
try:
    grid.check_devices(MODELS)
except grid.ConfigError as _err:
    config_error(str(_err))
# (model key, run name) -> {"model", "method", "sparsity", "Hyper_m", "Lamda", "seed", "point", "zero_shot", "uses_stats"}
# seed None: dense and uniform magnitude, which use no calibration data and run once.
# "zero_shot": the run is in the config's zero_shot section, so a zeroshot job (rules/zeroshot.smk)
# evaluates it besides its prune job; the prune job itself never runs zero-shot.
RUNS = grid.expand_grid(config, MODELS)
# The HTML report renders each caption (report/*.rst) from the config, without a template loader:
# the protocol block each caption prints is computed once here (owl/report/captions.py).
config["report_protocol"] = captions.caption_blocks(captions.caption_protocols(config, MODELS))
ZS_RUNS = [key for key, r in RUNS.items() if r["zero_shot"]]
# Statistics (calibrate jobs) per (model, seed); the seed is part of the calibration tag.
CALIB_SEEDS = {m: grid.calibration_seeds(config, RUNS, m) for m in MODELS}


def calib_tag(model, seed):
    m = MODELS[model]
    dtype = m["settings"].get("dtype", PruneSettings.dtype)
    forward = m["settings"].get("forward_dtype")
    return grid.calib_tag(m["calibration"], dtype if forward in (None, dtype) else f"{dtype}-forward-{forward}", seed)


CALIB_TAG_SEED = {(m, calib_tag(m, seed)): seed for m, seeds in CALIB_SEEDS.items() for seed in seeds}


# ---- paths ----------------------------------------------------------------------------------------
# A run's folder is its run name: the grid point, with _seed<k> when it uses calibration data
# (runs/<model>/wanda_s0.7_seed0/; dense and magnitude_s0.7 have no seed). The calibration tag
# carries the seed (calibration/<model>/c4-n32-len2048-seed0-float32/), allocations have a folder
# per seed (allocation/<model>/seed0/).
CALIB_DIR = f"{OUT}/calibration/{{model}}/{{calib}}"
STATS = f"{CALIB_DIR}/statistics.pt"
LOD = f"{CALIB_DIR}/lod.json"
RUN_DIR = f"{OUT}/runs/{{model}}/{{run}}"
RESULT = f"{RUN_DIR}/result.json"
ZEROSHOT = f"{RUN_DIR}/zeroshot.json"
ALLOC_DIR = f"{OUT}/allocation/{{model}}/seed{{seed}}"
TABLES_DIR = f"{OUT}/tables"
FIGURES_DIR = f"{OUT}/figures"
ABLATION_DIR = f"{OUT}/ablation"
LOGS = f"{OUT}/logs"


def result_path(key):
    model, run = key
    return RESULT.format(model=model, run=run)


def zeroshot_path(key):
    model, run = key
    return ZEROSHOT.format(model=model, run=run)


def calib_dir(model, seed):
    return CALIB_DIR.format(model=model, calib=calib_tag(model, seed))


def stats_path(model, seed):
    return STATS.format(model=model, calib=calib_tag(model, seed))


def lod_path(model, seed):
    return LOD.format(model=model, calib=calib_tag(model, seed))


def alloc_dir(model, seed):
    return ALLOC_DIR.format(model=model, seed=seed)


def run_stats(wc):
    """The statistics a run loads (OWL runs only): its model's at its seed, an ancient() input."""
    run = RUNS[(wc.model, wc.run)]
    return [ancient(stats_path(wc.model, run["seed"]))] if run["uses_stats"] else []


# ---- per-job settings -----------------------------------------------------------------------------
CALIB_KEYS = ("nsamples", "seqlen", "calib_dataset", "calib_batch_size")


def prune_settings(model, run_name):
    """The PruneSettings of one prune job, as a dict (checked by PruneSettings.validate at parse time).

    A prune job never runs zero-shot (eval_zero_shot is always False; the key stays so that the
    parameters, a Snakemake rerun trigger, are those of every existing result.json). Runs without
    calibration data (seed None) get PruneSettings' default seed, which they do not use.
    """
    run, m = RUNS[(model, run_name)], MODELS[model]
    return {
        "model": m["id"],
        "prune_method": run["method"],
        "sparsity_ratio": run["sparsity"],
        "sparsity_type": "unstructured",
        "Hyper_m": run["Hyper_m"],
        "Lamda": run["Lamda"],
        **{k: m["calibration"][k] for k in CALIB_KEYS},
        "seed": PruneSettings.seed if run["seed"] is None else run["seed"],
        **m["settings"],
        "stats_path": stats_path(model, run["seed"]) if run["uses_stats"] else None,
        "save": RUN_DIR.format(model=model, run=run_name),
        "eval_zero_shot": False,
        **run.get("settings", {}),  # a zoo run's pinned settings and its allocator's hyperparameter
    }


def prune_notebook_params(model, run_name):
    settings = prune_settings(model, run_name)
    params = {k: v for k, v in settings.items() if k in PRUNE_NOTEBOOK_PARAMS}
    params["extra"] = {k: v for k, v in settings.items() if k not in PRUNE_NOTEBOOK_PARAMS}
    return params


def zeroshot_settings(model, run_name):
    """The PruneSettings of one zeroshot job: the prune job's (same pruning, deterministic), no
    perplexity (eval_dataset None), zero-shot on the config's tasks."""
    zs = config["zero_shot"]
    return {**prune_settings(model, run_name), **ZEROSHOT_FIXED,
            "tasks": list(zs["tasks"]), "zero_shot_limit": zs["limit"], "zero_shot_batch_size": zs["batch_size"]}


def zeroshot_notebook_params(model, run_name):
    settings = zeroshot_settings(model, run_name)
    params = {k: v for k, v in settings.items() if k in ZEROSHOT_NOTEBOOK_PARAMS}
    params["extra"] = {k: v for k, v in settings.items() if k not in ZEROSHOT_NOTEBOOK_PARAMS and k not in ZEROSHOT_FIXED}
    return params


def calibrate_params(model, calib):
    m, seed = MODELS[model], CALIB_TAG_SEED[(model, calib)]
    settings = m["settings"]
    return {
        "model": m["id"],
        **{k: m["calibration"][k] for k in CALIB_KEYS},
        "seed": seed,
        "device": settings.get("device"),
        "dtype": settings.get("dtype", PruneSettings.dtype),
        "forward_dtype": settings.get("forward_dtype"),
        "cache_dir": settings.get("cache_dir"),
        "hyper_ms": grid.calibration_hyper_ms(MODELS, RUNS, model),
        "stats_path": stats_path(model, seed),
        "out_dir": calib_dir(model, seed),
    }


# Allocations per (model, seed) with OWL runs: every distinct (sparsity, M, lambda) of them, the
# main setting first. One allocate job per (model, seed) computes them all (no model is loaded).
ALLOCATIONS = [(m, seed) for m in MODELS for seed in CALIB_SEEDS[m] if grid.allocation_points(config, MODELS, RUNS, m, seed)]


def allocate_params(model, seed):
    m = MODELS[model]
    points = grid.allocation_points(config, MODELS, RUNS, model, seed)
    return {
        "lod_path": lod_path(model, seed),
        "model": m["id"],
        **points[0],
        "points": points,
        "owl_weighting": m["settings"].get("owl_weighting", "blocks"),
        "out_dir": alloc_dir(model, seed),
    }


def allocation_files():
    return [f"{alloc_dir(m, seed)}/allocation.json" for m, seed in ALLOCATIONS]


# ---- what the report notebooks get -----------------------------------------------------------------
def report_spec():
    spec = {"models": [{"key": k, "label": m["label"], "Hyper_m": m["owl"]["Hyper_m"], "Lamda": m["owl"]["Lamda"]}
                       for k, m in MODELS.items()]}
    spec["main"] = {**{k: config["main"][k] for k in ("sparsity", "models", "methods")}, "seeds": grid.seeds_by_model(config, "main")}
    for section in ("sweep", "ablation"):
        spec[section] = config[section] and {**copy.deepcopy(config[section]), "seeds": grid.seeds_by_model(config, section)}
    zs = config["zero_shot"]
    spec["zero_shot"] = None if not zs else {**{k: zs[k] for k in ("models", "methods", "sparsity", "tasks")},
                                             "seeds": grid.seeds_by_model(config, "zero_shot")}
    # The allocation zoo (owl.report.zoo): its config section, seeds by model; None while it has no run.
    zoo = config.get("zoo")
    has_runs = any(grid.is_zoo(r) for r in RUNS.values())
    spec["zoo"] = {**copy.deepcopy(zoo), "seeds": reported_seeds(zoo)} if zoo and has_runs else None
    return spec


SPEC = report_spec()


def ablation_runs():
    return grid.ablation_runs(config, RUNS)


RUN_IDENTITY = ("model", "method", "sparsity", "Hyper_m", "Lamda", "seed", "sections")
ZOO_IDENTITY = ("allocation", "alloc_value")  # a zoo run's allocator and its hyperparameter


def run_entries(keys, path=result_path):
    """What the report reads of each run: its file and identity (seed None: a run without calibration
    data); ``sections`` keeps zoo runs out of the paper's tables (owl.report.paper_runs)."""
    return [{"path": path(k), **{f: RUNS[k][f] for f in RUN_IDENTITY + (ZOO_IDENTITY if grid.is_zoo(RUNS[k]) else ())}}
            for k in keys]


def report_params(keys, out_dir, sections, path=result_path):
    return {"runs": run_entries(keys, path), "spec": SPEC, "sections": list(sections), "out_dir": out_dir}


# The tables rule writes the perplexity tables only; the zero-shot table has its own rule
# (rules/zeroshot.smk) and reads zeroshot.json files, so the perplexity tables never wait for it.
PPL_TABLE_SECTIONS = [s for s in report.TABLE_SECTIONS if s != "zero_shot"]


# ---- validate every run's settings before any job ---------------------------------------------------
for (_model, _run) in RUNS:
    try:
        PruneSettings(**prune_settings(_model, _run)).validate()
        if RUNS[(_model, _run)]["zero_shot"]:
            PruneSettings(**zeroshot_settings(_model, _run)).validate()
    except (OwlError, TypeError) as _err:
        config_error(f"run {_model}/{_run}: {_err}")


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
    ``notebooks/<notebook>`` with papermill on them (owl.notebook_runner: a kernel that dies while
    starting is started again), output and errors to the log.

    The executed notebook is a ``log:`` of its rule, so it is kept when the job fails (Snakemake
    deletes a failed job's outputs, not its logs); papermill writes it even when a cell raises.
    """
    return (
        f"mkdir -p \"$(dirname {params_file})\" && printf '%s\\n' {{params.{yaml_param}:q}} > {params_file} && "
        f'"$OWL_PYTHON" -m owl.notebook_runner "$OWL_REPO/notebooks/{notebook}" {executed} -f {params_file} '
        f">> {log} 2>&1"
    )


def wildcard_choices(values):
    return "|".join(re.escape(v) for v in sorted(set(values), key=len, reverse=True)) or "(?!)"


wildcard_constraints:
    model=wildcard_choices(MODELS),
    calib=wildcard_choices(tag for _, tag in CALIB_TAG_SEED),
    run=wildcard_choices(name for _, name in RUNS),
    seed=r"\d+",


def prune_runtime(wc):
    """Minutes of a prune job: the model's (zero-shot runs in a zeroshot job of its own)."""
    return res("prune", "runtime", wc.model)


def res(kind, key, model=None):
    """A resource of a job kind, with the per-model override when ``model`` is given."""
    if model is None:
        return {**grid.DEFAULT_RESOURCES[kind], **(config["resources"].get(kind) or {})}[key]
    return MODELS[model]["resources"][kind][key]


# ---- GPUs on one machine --------------------------------------------------------------------------
# Locally Snakemake gives a job no device of its own: every job on `cuda` uses the same GPU, and
# without `--resources gpu=N` it runs them side by side (each one's free-memory check passing
# before the others allocate). So a local run that has GPU jobs to do needs `--resources gpu=1`:
# one GPU job at a time (`make reproduce` passes it). Several GPUs: SLURM (profiles/slurm), which
# gives each job its own (--gpus). Checked when jobs are about to run (the executor is known only
# then), never in a dry run, a --touch or on a cluster.
def gpu_jobs_to_run():
    return [job for job in workflow.dag.needrun_jobs() if job.resources.get("gpu", 0) > 0]


def check_local_gpus():
    if not workflow.local_exec or not workflow.is_main_process or workflow.touch:
        return
    jobs = gpu_jobs_to_run()
    if not jobs:
        return
    given = workflow.global_resources.get("gpu")
    given = getattr(given, "value", given)
    if given != 1:
        config_error(f"{len(jobs)} job(s) need a GPU (e.g. {jobs[0].rule.name} {jobs[0].wildcards_dict}) and "
                     f"--resources gpu={given if given is not None else '(not given)'}; run locally with "
                     "--resources gpu=1 (one GPU job at a time: local jobs share one device), or on SLURM")


onstart:
    check_local_gpus()
