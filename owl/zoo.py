"""The allocation zoo's grid and its honest tuning, as pure functions of a config and of result dicts.

Two sections of a config's ``zoo``:
- ``zoo_tuning``: every allocator's range hyperparameter at each of ``zoo.tuning.values`` (the same
  number of values for every allocator), for ``zoo.tuning.methods`` (the other methods' reported
  runs take the first tuned method's values: :func:`tuned_with`), on calibration seeds the reported runs do not use,
  evaluated on WikiText-2 *validation* (``eval_limit`` windows). :func:`choose_tuned` picks, per
  (model, method, allocator), the value of lowest geometric-mean validation perplexity over the
  tuning seeds: a rule fixed before any trial ran. ``zoo.tuned`` in the config holds that choice and
  a test checks it against the committed trials.
- ``zoo``: every allocator at its paper default (where its official code has one) and at its tuned
  value, with the uniform baseline, on the reported seeds, evaluated on WikiText-2 test.
Every zoo run carries ``zoo.settings`` (e.g. a pinned ``eval_dtype``), so all of them are evaluated
alike whatever the CPU, and are never confused with the main table's runs (``zoo_`` run names).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from owl.allocators import get_allocator
from owl.errors import OwlError

ZOO_SECTIONS = ("zoo_tuning", "zoo")
RUN_PREFIXES = {"tune_": "zoo_tuning", "zoo_": "zoo"}  # a zoo run's name says its section
HYPER_TAGS = {"owl": "l", "dlp": "a", "dsa": "d", "alphapruning": "e", "atp": "b"}
HYPER_SYMBOLS = {"owl": "λ", "dlp": "α", "dsa": "λ", "alphapruning": "ε", "atp": "β"}  # as the papers write them
TUNING_DATASET = "wikitext2_validation"


def _num(x) -> str:
    return f"{float(x):g}"


def zoo_method(method: str, allocation: str) -> str:
    """The run's --prune_method: the base method for uniform, else the paper-style alias (wanda_dlp)."""
    return method if allocation == "uniform" else f"{method}_{allocation}"


def zoo_point_id(prefix: str, method: str, allocation: str, sparsity: float, value: float | None, hyper_m: float) -> str:
    """``zoo_wanda_s0.7``, ``zoo_wanda_dlp_s0.7_a0.15``, ``tune_sparsegpt_owl_s0.7_m5_l0.12``."""
    point = f"{prefix}_{zoo_method(method, allocation)}_s{_num(sparsity)}"
    if allocation == "owl":
        point += f"_m{_num(hyper_m)}"
    if allocation in HYPER_TAGS:
        point += f"_{HYPER_TAGS[allocation]}{_num(value)}"
    return point


def section_of_run(name: str) -> str | None:
    """The zoo section of a run folder name (``tune_...``: zoo_tuning, ``zoo_...``: zoo), else None."""
    return next((section for prefix, section in RUN_PREFIXES.items() if str(name).startswith(prefix)), None)


def reported_seeds(zoo: dict) -> dict[str, list[int]]:
    """``{model key: reported seeds}`` of a zoo section (seeds a list or a mapping by model)."""
    seeds = zoo.get("seeds")
    return {model: list((seeds.get(model, []) if isinstance(seeds, dict) else seeds) or []) for model in zoo["models"]}


def tuning_methods(zoo: dict) -> list[str]:
    """The pruning methods with tuning trials: ``zoo.tuning.methods``, default every zoo method."""
    return list(((zoo.get("tuning") or {}).get("methods")) or zoo["methods"])


def tuned_with(zoo: dict, method: str) -> str:
    """The method whose tuned values ``method``'s reported runs take: itself when it has trials,
    else the first tuned method (every official code uses one value for Wanda and SparseGPT)."""
    methods = tuning_methods(zoo)
    return method if method in methods else methods[0]


def reported_settings(zoo: dict, model: str, method: str) -> list[tuple[str, float | None, str]]:
    """``(allocation, value, origin)`` of a model's reported zoo runs for ``method``: uniform, every
    allocator at its paper default and at its tuned value (``zoo.tuned``, tuned with
    :func:`tuned_with`), without repeats; origin is ``default``, ``tuned`` or ``default, tuned``
    when they coincide."""
    out: dict[tuple[str, float | None], list[str]] = {}
    tuned = ((zoo.get("tuned") or {}).get(model) or {}).get(tuned_with(zoo, method)) or {}
    for allocation in zoo["allocators"]:
        allocator = get_allocator(allocation)
        if allocator.hyperparameter is None:
            out.setdefault((allocation, None), []).append("default")
            continue
        default = zoo.get("defaults", {}).get(allocation, allocator.default_value(method))
        if default is not None:
            out.setdefault((allocation, float(default)), []).append("default")
        if allocation in tuned:
            out.setdefault((allocation, float(tuned[allocation])), []).append("tuned")
    return [(a, v, ", ".join(origin)) for (a, v), origin in out.items()]


def expand_zoo(cfg: dict, models: dict) -> dict[tuple[str, str], dict]:
    """Every run of a validated config's ``zoo`` section: ``{(model key, run name): run}``, each with
    ``allocation``, ``alloc_value``, ``origin`` and the ``settings`` it adds to the model's."""
    zoo = cfg.get("zoo")
    runs: dict[tuple[str, str], dict] = {}
    if not zoo:
        return runs

    def add(section, model, method, allocation, value, seed, settings, origin, round_=None):
        owl = models[model]["owl"]
        hyper_m = float(owl["Hyper_m"])
        allocator = get_allocator(allocation)
        extra = dict(settings)
        if allocator.hyperparameter is not None:
            extra[allocator.hyperparameter] = float(value)
        prefix = "tune" if section == "zoo_tuning" else "zoo"
        point = zoo_point_id(prefix, method, allocation, zoo["sparsity"], value, hyper_m)
        name = f"{point}_seed{seed}"
        runs[(model, name)] = {
            "model": model, "method": zoo_method(method, allocation), "sparsity": float(zoo["sparsity"]),
            "Hyper_m": hyper_m, "Lamda": float(value) if allocation == "owl" else float(owl["Lamda"]),
            "seed": seed, "point": point, "zero_shot": False, "uses_stats": allocator.statistic_source == "calibration",
            "sections": [section], "allocation": allocation, "alloc_value": None if value is None else float(value),
            "origin": origin, "settings": extra, "round": round_,
        }

    base = dict(zoo.get("settings") or {})
    tuning = zoo.get("tuning") or {}
    for model in tuning.get("models", []):
        settings = {**base, "eval_dataset": TUNING_DATASET, "eval_limit": tuning.get("eval_limit")}
        for method in tuning_methods(zoo):
            for allocation, values in (tuning.get("values") or {}).items():
                for rank, value in enumerate(values):
                    for seed in tuning["seeds"]:
                        add("zoo_tuning", model, method, allocation, value, seed, settings, "trial", f"{method} value {rank + 1}")
    for model in zoo["models"]:
        for method in zoo["methods"]:
            for allocation, value, origin in reported_settings(zoo, model, method):
                for seed in reported_seeds(zoo)[model]:
                    add("zoo", model, method, allocation, value, seed, base, origin)
    return runs


def check_zoo(cfg: dict) -> None:
    """What the schema cannot say: known allocators and models, tuning seeds disjoint from the reported
    ones, the same number of trial values for every allocator. Raises OwlError naming the key."""
    zoo = cfg.get("zoo")
    if not zoo:
        return
    for allocation in zoo["allocators"]:
        get_allocator(allocation)
    tuning = zoo.get("tuning") or {}
    values = tuning.get("values") or {}
    for allocation in values:
        if allocation not in zoo["allocators"] or get_allocator(allocation).hyperparameter is None:
            raise OwlError(f"zoo.tuning.values.{allocation}: not a tunable allocator of zoo.allocators")
    if len({len(v) for v in values.values()}) > 1:
        counts = ", ".join(f"{a} {len(v)}" for a, v in values.items())
        raise OwlError(f"zoo.tuning.values: every allocator needs the same trial budget, got {counts}")
    for model in list(zoo["models"]) + list(tuning.get("models", [])):
        if model not in cfg["models"]:
            raise OwlError(f"zoo: model {model!r} is not a key of models")
    for method in tuning.get("methods") or []:
        if method not in zoo["methods"]:
            raise OwlError(f"zoo.tuning.methods: {method!r} is not one of zoo.methods ({', '.join(zoo['methods'])})")
    reported = {s for seeds in reported_seeds(zoo).values() for s in seeds}
    overlap = reported & set(tuning.get("seeds", []))
    if overlap:
        raise OwlError(f"zoo.tuning.seeds: {sorted(overlap)} are also reported seeds; tune on seeds the reported runs do not use")
    for model, methods in (zoo.get("tuned") or {}).items():
        for method, chosen in methods.items():
            if method not in tuning_methods(zoo):
                raise OwlError(f"zoo.tuned.{model}.{method}: {method} has no tuning trials (zoo.tuning.methods)")
            for allocation in chosen:
                if allocation not in values:
                    raise OwlError(f"zoo.tuned.{model}.{method}.{allocation}: no tuning trials for {allocation}")


# ---- the choice -------------------------------------------------------------------------------------------
def choose_tuned(trials: Iterable[dict]) -> dict:
    """The tuned value per (model, method, allocator) from trial records ``{model, method, allocation,
    value, seed, ppl}``: lowest geometric-mean validation perplexity over the seeds that every value of
    that allocator has (so no value wins by missing a hard seed). Ties: the first value in sorted order.
    Returns ``{model: {method: {allocation: {"value", "gmean", "values": {value: gmean}, "seeds"}}}}``."""
    grouped: dict[tuple, dict[float, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for t in trials:
        if not (t["ppl"] > 0 and math.isfinite(t["ppl"])):
            raise OwlError(f"trial {t} has no finite perplexity")
        grouped[(t["model"], t["method"], t["allocation"])][float(t["value"])][int(t["seed"])] = float(t["ppl"])
    out: dict = {}
    for (model, method, allocation), by_value in sorted(grouped.items()):
        common = sorted(set.intersection(*(set(s) for s in by_value.values())))
        if not common:
            continue
        gmeans = {v: math.exp(math.fsum(math.log(by_value[v][s]) for s in common) / len(common)) for v in sorted(by_value)}
        best = min(gmeans, key=lambda v: (gmeans[v], v))
        out.setdefault(model, {}).setdefault(method, {})[allocation] = {
            "value": best, "gmean": gmeans[best], "values": gmeans, "seeds": common}
    return out


def tuned_config(choice: dict) -> dict:
    """The ``zoo.tuned`` mapping of a choice: ``{model: {method: {allocation: value}}}``."""
    return {model: {method: {a: c["value"] for a, c in allocs.items()} for method, allocs in methods.items()}
            for model, methods in choice.items()}


def allocation_value(result: dict) -> float | None:
    """The range hyperparameter a result's allocation used (None for uniform and dense)."""
    allocation = result.get("allocation")
    if allocation in (None, "dense"):
        return None
    name = get_allocator(allocation).hyperparameter
    value = None if name is None else (result.get("allocation_params") or {}).get(name)
    return None if value is None else float(value)


def trial_records(runs: Iterable[dict], models: Iterable[str] | None = None) -> list[dict]:
    """Trial records from tuning result dicts (``result.json`` of ``tune_*`` runs); ``models``: each
    run's model key (the key ``zoo.tuned`` uses; default: the model id its settings record)."""
    runs = list(runs)
    keys = [None] * len(runs) if models is None else list(models)
    records = []
    for r, key in zip(runs, keys):
        settings = r.get("settings", {})
        base = settings.get("prune_method", r["prune_method"]).split("_")[0]
        records.append({"model": key or settings.get("model", r["model"]), "method": base, "allocation": r["allocation"],
                        "value": allocation_value(r), "seed": r["seed"], "ppl": r["ppl"][TUNING_DATASET]})
    return records


# ---- python -m owl.zoo choose ------------------------------------------------------------------------------
def trial_files(source) -> tuple[list, list[str]]:
    """``([(model key, result.json path)], [missing paths])`` of the tuning trials: those a config's
    zoo section lists (under its results folder), or every ``tune_*/result.json`` below a folder."""
    from pathlib import Path

    import yaml

    source = Path(source)
    if source.is_dir():
        found = sorted(p for p in source.rglob("result.json") if section_of_run(p.parent.name) == "zoo_tuning")
        return [(p.parent.parent.name, p) for p in found], []
    from owl import grid

    repo = Path(__file__).resolve().parents[1]
    cfg = grid.validate_config(yaml.safe_load(source.read_text()), yaml.safe_load((repo / "config" / "schema.yaml").read_text()))
    out = Path(cfg["results_dir"]) / (cfg.get("name") or source.stem)
    paths = [(model, out / "runs" / model / name / "result.json")
             for (model, name), run in grid.expand_grid(cfg, grid.model_specs(cfg)).items() if "zoo_tuning" in run["sections"]]
    return [(m, p) for m, p in paths if p.exists()], [str(p) for _, p in paths if not p.exists()]


def choice_yaml(choice: dict) -> str:
    """``zoo.tuned`` as YAML, after comments with every trial value's geometric mean."""
    import yaml

    lines = ["# python -m owl.zoo choose: per model, method and allocator the value of lowest geometric-mean",
             f"# {TUNING_DATASET} perplexity over the tuning seeds every value has (the rule fixed before the trials)."]
    for model, methods in choice.items():
        for method, allocs in methods.items():
            for allocation, c in allocs.items():
                values = ", ".join(f"{_num(v)}: {g:.3f}" + (" (chosen)" if v == c["value"] else "") for v, g in c["values"].items())
                lines.append(f"# {model} {method} {allocation} (seeds {', '.join(map(str, c['seeds']))}): {values}")
    body = yaml.safe_dump({"tuned": tuned_config(choice)}, sort_keys=False, default_flow_style=None)
    return "\n".join(lines) + "\n" + body


def main(argv=None) -> int:
    """``python -m owl.zoo choose CONFIG_OR_FOLDER``: the tuned values (YAML for ``zoo.tuned``) from
    the committed trial results; a config's trials without a result are named on stderr (exit 1)."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m owl.zoo")
    parser.add_argument("command", choices=["choose"])
    parser.add_argument("source", help="a workflow config (its zoo.tuning trials) or a results folder (every tune_* run below it)")
    args = parser.parse_args(argv)
    try:
        found, missing = trial_files(args.source)
        results = []
        for _, path in found:
            with open(path) as handle:
                results.append(json.load(handle))
        choice = choose_tuned(trial_records(results, [m for m, _ in found]))
    except (OSError, ValueError, KeyError, OwlError) as err:
        parser.exit(2, f"python -m owl.zoo: error: {args.source}: {err}\n")
    print(choice_yaml(choice), end="")
    if missing:
        sys.stderr.write(f"python -m owl.zoo: {len(missing)} trial(s) of the config have no result yet, e.g. {missing[0]}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
