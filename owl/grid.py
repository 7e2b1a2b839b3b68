"""The workflow's grid, as pure functions of a config: validation and defaults, per-model settings,
the runs (one per grid point and calibration seed), run names, statistics and allocation jobs.

rules/common.smk only wires these into Snakemake rules and paths. A grid point is a distinct
(model, method, sparsity, M, lambda); a run is a point at one calibration seed. Methods that use
no calibration data (dense, uniform magnitude) run once, with seed ``None``; every other method
(Wanda, SparseGPT and every ``*_owl``, magnitude_owl included: its outlier ratios come from the
statistics) runs once per seed of the sections that hold the point.
"""

from __future__ import annotations

import copy
import math
import time

from owl.errors import OwlError
from owl.report import OWL_BASELINE, is_owl
from owl.zoo import ZOO_SECTIONS, check_zoo, expand_zoo

SECTIONS = ("main", "sweep", "ablation", "zero_shot")  # the paper's; the zoo's (owl.zoo) come after them
NO_CALIBRATION_DATA = ("dense", "magnitude")
# slurm_extra: further sbatch options of a model's jobs (empty: none), e.g. a request for 80 GB GPUs.
DEFAULT_RESOURCES = {
    "calibrate": {"gpu": 0, "mem_mb": 16000, "runtime": 120, "threads": 2, "slurm_extra": ""},
    "prune": {"gpu": 0, "mem_mb": 16000, "runtime": 240, "threads": 2, "slurm_extra": ""},
    "report": {"gpu": 0, "mem_mb": 4000, "runtime": 20, "threads": 1, "slurm_extra": ""},
}
MODEL_JOB_KINDS = ("calibrate", "prune", "zeroshot")  # the jobs that load a model


class ConfigError(OwlError):
    """A workflow config the schema or the grid refuses (one line naming the key)."""


# ---- config: schema, defaults, what a schema cannot say --------------------------------------------
def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        target = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def fill_defaults(instance, schema: dict, root: dict, skip=("models",)) -> None:
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


def validate_config(cfg: dict, schema: dict) -> dict:
    """Check ``cfg`` against the schema (first error, one line naming the key), fill in its
    defaults and every section's model list, in place; return it. Raises :class:`ConfigError`."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(schema).iter_errors(cfg))
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".") or "top level"
        raise ConfigError(f"{where}: {error.message}")
    fill_defaults(cfg, schema, schema)
    keys = list(cfg["models"])
    labels = [m.get("label", k) for k, m in cfg["models"].items()]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"models: labels must differ, got {labels}")
    for section in SECTIONS:
        if cfg.get(section) is None:
            continue
        cfg[section].setdefault("models", keys)
        for key in cfg[section]["models"]:
            if key not in cfg["models"]:
                raise ConfigError(f"{section}.models: {key!r} is not a key of models (have {', '.join(keys)})")
        if isinstance(cfg[section].get("seeds"), dict):
            for key in cfg[section]["seeds"]:
                if key not in cfg[section]["models"]:
                    raise ConfigError(f"{section}.seeds: {key!r} is not one of {section}.models ({', '.join(cfg[section]['models'])})")
    sweep = cfg.get("sweep")
    for i, extra in enumerate((sweep or {}).get("cell_seeds") or []):
        for value in extra["sparsities"]:
            if not any(math.isclose(value, x) for x in sweep["sparsities"]):
                raise ConfigError(f"sweep.cell_seeds[{i}].sparsities: {value} is not in sweep.sparsities {sweep['sparsities']}")
    try:
        check_zoo(cfg)
    except OwlError as err:
        raise ConfigError(str(err)) from None
    ab = cfg.get("ablation")
    for i, extra in enumerate((ab or {}).get("cell_seeds") or []):
        for axis in ("Hyper_m", "Lamda"):
            for value in extra[axis]:
                if not any(math.isclose(value, x) for x in ab[axis]):
                    raise ConfigError(f"ablation.cell_seeds[{i}].{axis}: {value} is not in ablation.{axis} {ab[axis]}")
    return cfg


def section_seeds(cfg: dict, section: str, model: str | None = None) -> list[int]:
    """The calibration seeds of a section (for one model when its ``seeds`` is a mapping from model
    key to seeds): its own ``seeds``, else the top-level ones. A model a mapping leaves out gets the
    top-level seeds."""
    own = cfg[section].get("seeds")
    if isinstance(own, dict):
        if model is None:
            raise ValueError(f"{section}.seeds is per model: name the model")
        own = own.get(model)
    return list(own or cfg["seeds"])


def seeds_by_model(cfg: dict, section: str) -> dict[str, list[int]]:
    """A section's seeds for each of its models (what the report's captions name)."""
    return {model: section_seeds(cfg, section, model) for model in cfg[section]["models"]}


def sweep_cell_seeds(cfg: dict, model: str, sparsity: float) -> list[int]:
    """The seeds of the sweep's runs at one sparsity: the section's, plus those of every
    ``cell_seeds`` entry that holds the sparsity (every method of the sweep, so pairs stay whole)."""
    seeds = set(section_seeds(cfg, "sweep", model))
    for extra in cfg["sweep"].get("cell_seeds") or []:
        if any(math.isclose(sparsity, x) for x in extra["sparsities"]):
            seeds.update(extra["seeds"])
    return sorted(seeds)


def ablation_cell_seeds(cfg: dict, model: str, hyper_m: float, lamda: float) -> list[int]:
    """The seeds of one ablation cell: the section's, plus those of every ``cell_seeds`` entry that
    holds the cell (so a few cells can be measured at more seeds than the whole grid)."""
    ab = cfg["ablation"]
    seeds = set(section_seeds(cfg, "ablation", model))
    for extra in ab.get("cell_seeds") or []:
        if any(math.isclose(hyper_m, m) for m in extra["Hyper_m"]) and any(math.isclose(lamda, x) for x in extra["Lamda"]):
            seeds.update(extra["seeds"])
    return sorted(seeds)


# ---- models: top-level values with per-model overrides ---------------------------------------------
def calib_tag(calibration: dict, dtype: str, seed: int) -> str:
    """The calibration setting in the statistics' path (what the statistics depend on, as the meta
    owl.pipeline stores with them): a new setting or seed is a new file, never a reuse."""
    return f"{calibration['calib_dataset']}-n{calibration['nsamples']}-len{calibration['seqlen']}-seed{seed}-{dtype}"


def model_specs(cfg: dict) -> dict[str, dict]:
    """Per model key: id, label and its merged owl, calibration, settings and resources."""
    models = {}
    for key, m in cfg["models"].items():
        merged = {s: {**cfg.get(s, {}), **(m.get(s) or {})} for s in ("owl", "calibration", "settings")}
        resources = {kind: {**defaults, **(cfg["resources"].get(kind) or {}), **((m.get("resources") or {}).get(kind) or {})}
                     for kind, defaults in DEFAULT_RESOURCES.items()}
        # A zeroshot job prunes the model again (no perplexity) and then runs the tasks: the model's
        # prune resources plus zero_shot.extra_runtime minutes, unless resources.zeroshot says otherwise.
        extra = (cfg.get("zero_shot") or {}).get("extra_runtime", 0)
        resources["zeroshot"] = {**resources["prune"], "runtime": resources["prune"]["runtime"] + extra,
                                 **(cfg["resources"].get("zeroshot") or {}), **((m.get("resources") or {}).get("zeroshot") or {})}
        models[key] = {"key": key, "id": m["id"], "label": m.get("label", key), **merged, "resources": resources}
    return models


def check_devices(models: dict[str, dict]) -> None:
    """Every model names its device, and a model on a CUDA device asks for a GPU in every job that
    loads it: the GPU count is what keeps two jobs off one device (Snakemake's --resources gpu=N
    locally, --gpus on SLURM). ``device: null`` would pick cuda wherever a GPU is found, so that a
    CPU reproduction moves onto a GPU that no job asked for. Raises :class:`ConfigError`."""
    for key, m in models.items():
        device = m["settings"].get("device")
        if device is None:
            raise ConfigError(f"models.{key}: settings.device is null (cuda wherever a GPU is found); "
                              "name it: cpu, or cuda with resources gpu >= 1")
        if device.startswith("cuda"):
            for kind in MODEL_JOB_KINDS:
                if m["resources"][kind]["gpu"] < 1:
                    raise ConfigError(f"models.{key}: resources.{kind}.gpu is 0 but settings.device is {device}; "
                                      "a job on a GPU must ask for one (gpu: 1)")


# ---- runs ---------------------------------------------------------------------------------------
def _num(x) -> str:
    return f"{float(x):g}"


def uses_calibration_data(method: str) -> bool:
    """Whether a run's result depends on the calibration windows (so it runs once per seed)."""
    return method not in NO_CALIBRATION_DATA


def point_id(method: str, sparsity: float, hyper_m: float, lamda: float) -> str:
    """Name of a grid point: dense, wanda_s0.7, wanda_owl_s0.7_m5_l0.08."""
    if method == "dense":
        return "dense"
    pid = f"{method}_s{_num(sparsity)}"
    return pid + (f"_m{_num(hyper_m)}_l{_num(lamda)}" if is_owl(method) else "")


def run_name(point: str, seed: int | None) -> str:
    """Folder name of a run: the point, with ``_seed<k>`` for runs that use calibration data."""
    return point if seed is None else f"{point}_seed{seed}"


def expand_grid(cfg: dict, models: dict[str, dict]) -> dict[tuple[str, str], dict]:
    """Every run of a validated config: ``{(model key, run name): run}``.

    A run is ``{model, method, sparsity, Hyper_m, Lamda, seed, point, zero_shot, uses_stats, sections}``.
    The grid is the union of the sections; a point in several sections runs at the union of their
    seeds, and a run is a zero-shot run when its point and seed are in the zero_shot section.
    """
    runs: dict[tuple[str, str], dict] = {}

    def add(section, model, method, sparsity, hyper_m=None, lamda=None, seeds=None):
        owl = models[model]["owl"]
        hyper_m = float(owl["Hyper_m"] if hyper_m is None else hyper_m)
        lamda = float(owl["Lamda"] if lamda is None else lamda)
        sparsity = 0.0 if method == "dense" else float(sparsity)
        point = point_id(method, sparsity, hyper_m, lamda)
        if not uses_calibration_data(method):
            seeds = [None]
        elif seeds is None:
            seeds = section_seeds(cfg, section, model)
        for seed in seeds:
            run = runs.setdefault((model, run_name(point, seed)), {
                "model": model, "method": method, "sparsity": sparsity, "Hyper_m": hyper_m, "Lamda": lamda,
                "seed": seed, "point": point, "zero_shot": False, "uses_stats": is_owl(method), "sections": []})
            run["zero_shot"] = run["zero_shot"] or section == "zero_shot"
            if section not in run["sections"]:
                run["sections"].append(section)

    main = cfg["main"]
    for model in main["models"]:
        for method in main["methods"]:
            add("main", model, method, main["sparsity"])
    if cfg.get("sweep"):
        for model in cfg["sweep"]["models"]:
            for method in cfg["sweep"]["methods"]:
                for s in cfg["sweep"]["sparsities"]:
                    add("sweep", model, method, s, seeds=sweep_cell_seeds(cfg, model, s))
    if cfg.get("ablation"):
        ab = cfg["ablation"]
        for model in ab["models"]:
            for m in ab["Hyper_m"]:
                for lam in ab["Lamda"]:
                    add("ablation", model, ab["method"], ab["sparsity"], m, lam, seeds=ablation_cell_seeds(cfg, model, m, lam))
            if ab["method"] in OWL_BASELINE:  # the uniform reference every cell is compared with, at every cell's seeds
                every_cell = sorted({k for m in ab["Hyper_m"] for lam in ab["Lamda"] for k in ablation_cell_seeds(cfg, model, m, lam)})
                add("ablation", model, OWL_BASELINE[ab["method"]], ab["sparsity"], seeds=every_cell)
    if cfg.get("zero_shot"):
        zs = cfg["zero_shot"]
        for model in zs["models"]:
            for method in zs["methods"]:
                add("zero_shot", model, method, zs["sparsity"])
    runs.update(expand_zoo(cfg, models))
    return runs


def is_zoo(run: dict) -> bool:
    """A run of the allocation zoo (owl.zoo): its own settings and tables, never in the paper's."""
    return any(section in ZOO_SECTIONS for section in run["sections"])


# ---- statistics and allocations: per (model, seed) ---------------------------------------------------
def calibration_seeds(cfg: dict, runs: dict, model: str) -> list[int]:
    """Seeds of a model's statistics jobs: every seed its runs use (the top-level seeds when none
    does, so every model still gets its layerwise outlier distribution)."""
    seeds = {r["seed"] for r in runs.values() if r["model"] == model and r["seed"] is not None}
    return sorted(seeds) or sorted(cfg["seeds"])


def calibration_hyper_ms(models: dict, runs: dict, model: str) -> list:
    """The M values lod.json reports: calibration.hyper_ms, the model's M and every OWL run's."""
    ms = {float(x) for x in models[model]["calibration"]["hyper_ms"]}
    ms.add(float(models[model]["owl"]["Hyper_m"]))
    ms.update(r["Hyper_m"] for r in runs.values() if r["model"] == model and is_owl(r["method"]))
    return [int(x) if x.is_integer() else x for x in sorted(ms)]


def allocation_points(cfg: dict, models: dict, runs: dict, model: str, seed: int) -> list[dict]:
    """Every distinct (sparsity, M, lambda) of a model's OWL runs at ``seed``, the main setting first."""
    owl = models[model]["owl"]
    main = (float(cfg["main"]["sparsity"]), float(owl["Hyper_m"]), float(owl["Lamda"]))
    points = {(r["sparsity"], r["Hyper_m"], r["Lamda"]) for r in runs.values()
              if r["model"] == model and r["seed"] == seed and is_owl(r["method"])}
    ordered = sorted(points, key=lambda p: (p != main, p))
    return [{"sparsity_ratio": s, "Hyper_m": m, "Lamda": lam} for s, m, lam in ordered]


def ablation_runs(cfg: dict, runs: dict) -> list[tuple[str, str]]:
    """Run keys (every seed) of the ablation grid and of its uniform baseline (e.g. Wanda for OWL
    w. Wanda) at the ablation's sparsity, which the ablation table and heatmap compare cells with."""
    ab = cfg["ablation"]
    baseline = OWL_BASELINE.get(ab["method"])

    def in_grid(r):
        return (r["method"] == ab["method"] and any(math.isclose(r["Hyper_m"], x) for x in ab["Hyper_m"])
                and any(math.isclose(r["Lamda"], x) for x in ab["Lamda"]))

    return [key for key, r in runs.items() if not is_zoo(r)
            and r["model"] in ab["models"] and math.isclose(r["sparsity"], ab["sparsity"]) and (r["method"] == baseline or in_grid(r))]


# ---- batches: a long grid in an order whose finished parts are whole tables ----------------------
def run_batches(cfg: dict, runs: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    """The runs of a grid as ``[(label, run keys)]``, in the order to run them across sessions:
    section by section (main, sweep, ablation, zero_shot), model by model, seed by seed, each run
    in the first batch that holds it. Once a batch is done, the seeds of its (section, model) up to
    that seed are complete, so they can be committed and listed in the config on their own.
    Prune jobs (result.json) only: zeroshot jobs are their own target."""
    done, batches = set(), []
    for section in (*SECTIONS, *ZOO_SECTIONS):
        section_runs = [(k, r) for k, r in runs.items() if section in r["sections"]]
        for model in dict.fromkeys(r["model"] for _, r in section_runs):
            model_runs = [(k, r) for k, r in section_runs if r["model"] == model]
            seeds = sorted({r["seed"] for _, r in model_runs if r["seed"] is not None})
            # Tuning trials go round by round (every allocator's i-th value), so that what is done
            # has the same trial budget for every allocator.
            rounds = list(dict.fromkeys(r.get("round") for _, r in model_runs))
            for round_ in rounds:
                for seed in [None, *seeds]:
                    keys = [k for k, r in model_runs if r["seed"] == seed and r.get("round") == round_ and k not in done]
                    if keys:
                        done.update(keys)
                        label = f"{section} {model} " + (f"{round_} " if round_ else "")
                        batches.append((label + ("uncalibrated" if seed is None else f"seed {seed}"), keys))
    return batches


def next_invocation(unfinished: list[tuple[str, list]]) -> tuple[str, list, list] | None:
    """The next call of a batched grid from its unfinished batches in order (``[(label, targets)]``):
    ``(label, prioritised, targets)``, the first batch's targets prioritised and the second batch's
    added as further targets, so that a core freed at the first batch's tail starts the next seed
    instead of idling, while the first batch still finishes first. None when nothing is left."""
    if not unfinished:
        return None
    label, first = unfinished[0]
    second = unfinished[1][1] if len(unfinished) > 1 else []
    return label, list(first), [*first, *second]


def run_in_batches(unfinished, snakemake, log=print) -> int:
    """Run a grid to its end, one :func:`next_invocation` at a time. ``unfinished()``: the batches
    not finished yet, asked again after every call (runs finished elsewhere count); ``snakemake
    (prioritised, targets)``: one call, returning its exit status. Stops at the first failing call
    (its status), and with status 1 when a call succeeded but left its first batch unfinished, which
    would otherwise repeat forever."""
    previous = None
    while (call := next_invocation(unfinished())) is not None:
        label, prioritised, targets = call
        if label == previous:
            log(f"python -m owl.grid run: error: {label}: snakemake succeeded but these runs are still missing: {' '.join(map(str, prioritised))}")
            return 1
        log(f"== {time.strftime('%H:%M:%S', time.gmtime())} UTC {label}" + (" (and the next batch)" if len(targets) > len(prioritised) else ""))
        status = snakemake(prioritised, targets)
        if status:
            return status
        previous = label
    log("== every batch is finished")
    return 0


def run_seconds(result: dict) -> float:
    """What a finished run cost from scratch: its process's total time, plus the calibration and
    pruning an earlier, interrupted process did where this one restored them (``pruning_restored``)."""
    timings = result["timings_s"]
    restored = timings.get("calibration", 0.0) + timings.get("pruning", 0.0) if result.get("pruning_restored") else 0.0
    return float(timings["total"]) + restored


def grid_status(runs: dict, batches: list[tuple[str, list[tuple[str, str]]]], seconds: dict) -> list[dict]:
    """Per unfinished batch: runs done and left, and the CPU seconds its missing runs should take
    (None where unknown). ``seconds``: the finished runs' costs by run key (:func:`run_seconds`). A missing run is
    estimated by the median time of the finished runs of its model and first section (a tuning
    trial and a reported run cost differently), never by another section's."""
    by_group: dict[tuple, list[float]] = {}
    for key, total in seconds.items():
        by_group.setdefault((key[0], runs[key]["sections"][0]), []).append(float(total))

    def median(values):
        values = sorted(values)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    rows = []
    for label, keys in batches:
        missing = [k for k in keys if k not in seconds]
        if not missing:
            continue
        estimates = [by_group.get((k[0], runs[k]["sections"][0])) for k in missing]
        rows.append({"batch": label, "done": len(keys) - len(missing), "runs": len(keys),
                     "cpu_s": None if any(e is None for e in estimates) else sum(median(e) for e in estimates),
                     "basis": sorted({len(e) for e in estimates if e is not None})})
    return rows


def format_status(rows: list[dict], jobs_at_once: int) -> str:
    """The table ``python -m owl.grid status`` prints, with the wall time at ``jobs_at_once`` jobs."""
    lines = [f"{'batch':<52} {'done':>7} {'CPU h left':>10}"]
    known = [r["cpu_s"] for r in rows if r["cpu_s"] is not None]
    for r in rows:
        hours = "unknown" if r["cpu_s"] is None else f"{r['cpu_s'] / 3600:.1f}"
        lines.append(f"{r['batch']:<52} {r['done']:>3}/{r['runs']:<3} {hours:>10}")
    left = sum(r["runs"] - r["done"] for r in rows)
    unknown = sum(r["runs"] - r["done"] for r in rows if r["cpu_s"] is None)
    total = sum(known) / 3600
    lines.append(f"{left} runs left: {total:.1f} CPU hours for those with an estimate, about {total / jobs_at_once:.1f} h "
                 f"at {jobs_at_once} jobs at once" + (f"; {unknown} runs in batches with no finished run of their kind yet" if unknown else "")
                 + ". Estimates: the median time of finished runs of the same model and section, on whatever CPU ran them.")
    return "\n".join(lines)


def is_dry_run(snakemake_options: list[str]) -> bool:
    """Whether snakemake would take these options as a dry run, read by snakemake's own parser so
    that combined short flags (``-np``) count; the literal spellings if that parser is unavailable."""
    try:
        from snakemake.cli import get_argument_parser

        known, _ = get_argument_parser().parse_known_args(snakemake_options)
        return bool(known.dryrun)
    except (ImportError, AttributeError, SystemExit):  # another snakemake, or options its parser refuses
        return bool({"-n", "--dry-run", "--dryrun"} & set(snakemake_options))


def main(argv=None) -> int:
    """``python -m owl.grid batches CONFIG [--results DIR]``: one line per batch of CONFIG's grid
    whose runs are not all finished, ``<label>\t<result.json paths>``.
    ``python -m owl.grid run CONFIG [-- SNAKEMAKE OPTIONS]``: run them with snakemake, batch after
    batch (:func:`run_in_batches`; what ``make seed-grid`` calls), resuming where it stopped.
    ``python -m owl.grid status CONFIG [--jobs N]``: what is left of it, with a time estimate."""
    import argparse
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    parser = argparse.ArgumentParser(prog="python -m owl.grid")
    parser.add_argument("command", choices=["batches", "run", "status"])
    parser.add_argument("config")
    parser.add_argument("--results", default=None, help="results folder (default: the config's results_dir/name)")
    parser.add_argument("--jobs", type=int, default=2, help="status: prune jobs at once, for the wall time (default 2)")
    parser.epilog = "run: what follows -- goes to every snakemake call, e.g. -- --cores 2 --resources gpu=1"
    argv = list(sys.argv[1:] if argv is None else argv)
    snakemake_options = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if snakemake_options and args.command != "run":
        parser.exit(2, f"python -m owl.grid: error: {' '.join(snakemake_options)}: snakemake options are for the run command only\n")
    if args.command == "run" and args.results:
        parser.exit(2, f"python -m owl.grid: error: --results {args.results}: not for run, which writes where the config's results_dir says\n")
    repo = Path(__file__).resolve().parents[1]
    try:
        cfg = validate_config(yaml.safe_load(Path(args.config).read_text()), yaml.safe_load((repo / "config" / "schema.yaml").read_text()))
    except (OSError, yaml.YAMLError, ConfigError) as err:
        parser.exit(2, f"python -m owl.grid: error: {args.config}: {err}\n".replace("\n", " ").rstrip() + "\n")
    out = Path(args.results or f"{cfg['results_dir']}/{cfg.get('name') or Path(args.config).stem}")
    runs = expand_grid(cfg, model_specs(cfg))

    def result_path(key):
        model, run = key
        return out / "runs" / model / run / "result.json"

    if args.command == "status":
        if args.jobs < 1:
            parser.exit(2, f"python -m owl.grid: error: --jobs {args.jobs}: must be at least 1\n")
        seconds = {}
        for key in runs:
            if result_path(key).exists():
                seconds[key] = run_seconds(json.loads(result_path(key).read_text()))
        print(format_status(grid_status(runs, run_batches(cfg, runs), seconds), args.jobs))
        return 0

    def unfinished():
        batches = []
        for label, keys in run_batches(cfg, runs):
            missing = [str(result_path(k)) for k in keys if not result_path(k).exists()]
            if missing:
                batches.append((label, missing))
        return batches

    if args.command == "run":
        def snakemake(prioritised, targets):
            command = [sys.executable, "-m", "snakemake", *snakemake_options, "--rerun-triggers", "mtime", "input",
                       "--configfile", args.config, "--prioritize", *prioritised, "--", *targets]
            return subprocess.call(command)
        if is_dry_run(snakemake_options):  # a dry run finishes nothing: show the first call only
            call = next_invocation(unfinished())
            return snakemake(call[1], call[2]) if call else 0
        return run_in_batches(unfinished, snakemake, log=lambda line: print(line, flush=True))
    try:
        for label, missing in unfinished():
            print(f"{label}\t{' '.join(missing)}", flush=True)
    except BrokenPipeError:  # a reader that stops early (``| head -2``) is not an error
        sys.stdout = open(os.devnull, "w")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
