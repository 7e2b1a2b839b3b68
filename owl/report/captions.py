"""The protocol lines of the HTML report's captions (report/*.rst), one per model and section.

Snakemake renders each caption with Jinja from a string (no template loader, so no shared Jinja
include; docutils' ``.. include::`` would come after Jinja, so it could only include fixed text).
The workflow therefore puts each section's whole protocol block, written here once, into the config
it renders with (rules/common.smk), and every caption ends with one expression that prints its
section's block: one function says what a protocol is, instead of one copy of it per caption.
"""

from __future__ import annotations

import math

AUTO_NOTE = " (bfloat16 where the device has native bf16, else float32; each result.json records the choice)"


def format_seeds(seeds) -> str:
    """``[0, 1, 2, 3]`` -> ``0-3``; ``[0, 2, 5]`` -> ``0, 2, 5``; ``[4]`` -> ``4``."""
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def seed_phrase(seeds) -> str:
    seeds = list(seeds)
    return f"seed {format_seeds(seeds)} (one draw)" if len(seeds) == 1 else f"seeds {format_seeds(seeds)} ({len(seeds)} draws)"


def protocol_line(model: dict, seeds: str) -> str:
    """One model's protocol in reStructuredText: ``model`` is an owl.grid.model_specs entry (its
    merged calibration, settings and owl), ``seeds`` the phrase naming its calibration seeds."""
    c, s, o = model["calibration"], model["settings"], model["owl"]
    dtype = s.get("dtype") or "float32"
    forward = s.get("forward_dtype")
    pruning = dtype if forward in (None, dtype) else f"{dtype} with {forward} block forwards"
    eval_dtype = s.get("eval_dtype") or dtype
    windows = f"first {s['eval_limit']} windows" if s.get("eval_limit") else "every window"
    return (f"**{model['label']}** (``{model['id']}``): calibration {c['calib_dataset']}, {c['nsamples']} windows of "
            f"{c['seqlen']} tokens, {seeds}; pruning in {pruning}, evaluation in {eval_dtype}"
            f"{AUTO_NOTE if eval_dtype == 'auto' else ''} on WikiText-2 test ({windows} of {c['seqlen']} tokens); "
            f"OWL M {o['Hyper_m']:g}, lambda {o['Lamda']:g}.")


def _shared_with_main(cfg: dict, section: str, key: str, model: dict, seeds) -> str:
    """A sweep or ablation point that is also the main table's (its sparsity; for the ablation, the
    model's own M and lambda) runs at the main table's seeds too: say so, as its cell shows them."""
    from owl import grid

    if section not in ("sweep", "ablation") or key not in cfg["main"]["models"]:
        return ""
    extra = sorted(set(grid.section_seeds(cfg, "main", key)) - set(seeds))
    target = float(cfg["main"]["sparsity"])
    if not extra:
        return ""
    if section == "sweep" and any(math.isclose(target, s) for s in cfg["sweep"]["sparsities"]):
        return f", sparsity {target:g} (the main table's) also at seeds {format_seeds(extra)}"
    ab, owl = cfg["ablation"], model["owl"]
    if (section == "ablation" and math.isclose(target, ab["sparsity"])
            and any(math.isclose(owl["Hyper_m"], m) for m in ab["Hyper_m"]) and any(math.isclose(owl["Lamda"], x) for x in ab["Lamda"])):
        return f", cell M {owl['Hyper_m']:g} x lambda {owl['Lamda']:g} (the main table's) also at seeds {format_seeds(extra)}"
    return ""


def caption_protocols(cfg: dict, models: dict[str, dict]) -> dict[str, dict[str, str]]:
    """``{section: {model key: protocol line}}`` for every caption section of a validated config
    (``models``: owl.grid.model_specs). The statistics section (LOD charts, allocations) covers
    every model; a table or figure section its own models with its own seeds."""
    from owl import grid

    mean_note = "; geometric mean over the seeds, OWL against uniform paired by seed"
    out = {"statistics": {k: protocol_line(m, "one statistics file per calibration seed") for k, m in models.items()}}
    for section, source, note in (("main", "main", mean_note), ("sweep", "sweep", mean_note), ("ablation", "ablation", mean_note),
                                  ("zero_shot", "zero_shot", ""), ("layerwise", "main", "")):
        if not cfg.get(source):
            continue
        lines = {}
        for key, seeds in grid.seeds_by_model(cfg, source).items():
            phrase = seed_phrase(seeds)
            if section == "ablation":
                for extra in cfg["ablation"].get("cell_seeds") or []:
                    phrase += (f", cells M {', '.join(f'{x:g}' for x in extra['Hyper_m'])} x lambda "
                               f"{', '.join(f'{x:g}' for x in extra['Lamda'])} also at seeds {format_seeds(extra['seeds'])}")
            if section == "sweep":
                for extra in cfg["sweep"].get("cell_seeds") or []:
                    phrase += (f", sparsity {', '.join(f'{x:g}' for x in extra['sparsities'])} also at seeds "
                               f"{format_seeds(extra['seeds'])}")
            phrase += _shared_with_main(cfg, section, key, models[key], seeds)
            lines[key] = protocol_line(models[key], phrase + note)
        out[section] = lines
    if cfg.get("zoo"):
        out["zoo"] = zoo_protocols(cfg["zoo"], models)
    return out


def protocol_block(lines: dict[str, str]) -> str:
    """The closing block of a caption, in reStructuredText: "Protocol:" and one item per model."""
    return "Protocol:\n\n" + "".join(f"- {line}\n" for line in lines.values())


def caption_blocks(protocols: dict[str, dict[str, str]]) -> dict:
    """What the captions print (``{{ snakemake.config.report_protocol[<section>] }}``): each section's
    protocol block; the statistics section (LOD charts, allocations: one model each) one block per
    model, ``report_protocol["statistics"][<model key>]``."""
    blocks = {section: protocol_block(lines) for section, lines in protocols.items() if section != "statistics"}
    blocks["statistics"] = {key: protocol_block({key: line}) for key, line in protocols["statistics"].items()}
    return blocks


def zoo_protocols(zoo: dict, models: dict[str, dict]) -> dict[str, str]:
    """The zoo caption's lines: each model with reported seeds, with the settings every zoo run adds
    (e.g. its pinned evaluation precision); the tuning protocol is the caption's own text."""
    from owl.zoo import reported_seeds

    lines = {}
    for key, seeds in reported_seeds(zoo).items():
        if seeds:
            model = {**models[key], "settings": {**models[key]["settings"], **(zoo.get("settings") or {})}}
            lines[key] = protocol_line(model, seed_phrase(seeds) + "; geometric mean over the seeds, every setting "
                                       "against uniform and against OWL at its paper default paired by seed")
    return lines
