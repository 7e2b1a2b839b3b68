"""owl.report.captions: the protocol lines every HTML-report caption prints."""

from __future__ import annotations

from pathlib import Path

import yaml

from owl import grid
from owl.report import captions

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "schema.yaml").read_text())


def test_seeds_are_written_as_ranges_only_when_consecutive():
    assert captions.format_seeds([3, 1, 2, 0]) == "0-3"
    assert captions.format_seeds([0, 2, 5]) == "0, 2, 5"
    assert captions.format_seeds([0, 1]) == "0, 1" and captions.format_seeds([4]) == "4"


def test_each_section_names_each_models_own_seeds_and_settings():
    cfg = grid.validate_config({
        "models": {"a": {"id": "tiny-a", "label": "A"}, "b": {"id": "tiny-b", "settings": {"eval_dtype": "auto"}}},
        "calibration": {"nsamples": 8, "seqlen": 256},
        "main": {"sparsity": 0.7, "methods": ["wanda"], "seeds": {"a": [0, 1, 2, 3, 4]}},
        "ablation": {"models": ["a"], "Hyper_m": [3, 10], "Lamda": [0.08],
                     "cell_seeds": [{"Hyper_m": [3], "Lamda": [0.08], "seeds": [0, 1, 2]}]},
    }, SCHEMA)
    lines = captions.caption_protocols(cfg, grid.model_specs(cfg))
    assert set(lines) == {"statistics", "main", "ablation", "layerwise"}  # no sweep or zero-shot section
    assert lines["main"]["a"].startswith("**A** (``tiny-a``): calibration c4, 8 windows of 256 tokens, seeds 0-4 (5 draws)")
    assert "seed 0 (one draw)" in lines["main"]["b"] and "native bf16" in lines["main"]["b"]
    assert "native bf16" not in lines["main"]["a"] and "OWL M 5, lambda 0.08." in lines["main"]["a"]
    assert "cells M 3 x lambda 0.08 also at seeds 0-2" in lines["ablation"]["a"]
    assert list(lines["statistics"]) == ["a", "b"] and list(lines["ablation"]) == ["a"]


def test_the_sweep_caption_names_the_sparsities_measured_at_more_seeds():
    cfg = grid.validate_config({
        "models": {"a": {"id": "tiny-a", "label": "A"}},
        "main": {"sparsity": 0.7, "methods": ["wanda"]},
        "sweep": {"models": ["a"], "methods": ["wanda", "wanda_owl"], "sparsities": [0.5, 0.8], "seeds": [0, 1],
                  "cell_seeds": [{"sparsities": [0.8], "seeds": [0, 1, 2]}]},
    }, SCHEMA)
    line = captions.caption_protocols(cfg, grid.model_specs(cfg))["sweep"]["a"]
    assert "seeds 0, 1 (2 draws), sparsity 0.8 also at seeds 0-2;" in line  # main's seeds are the sweep's: no more


def test_sweep_and_ablation_captions_name_the_main_tables_seeds_of_a_shared_point():
    cfg = grid.validate_config({
        "models": {"a": {"id": "tiny-a", "label": "A"}, "b": {"id": "tiny-b"}},
        "main": {"sparsity": 0.7, "methods": ["wanda"], "seeds": {"a": [0, 1, 2, 3, 4]}},
        "sweep": {"models": ["a", "b"], "methods": ["wanda", "wanda_owl"], "sparsities": [0.5, 0.7]},
        "ablation": {"models": ["a"], "Hyper_m": [5, 10], "Lamda": [0.08]},
    }, SCHEMA)
    lines = captions.caption_protocols(cfg, grid.model_specs(cfg))
    assert "seed 0 (one draw), sparsity 0.7 (the main table's) also at seeds 1-4;" in lines["sweep"]["a"]
    assert "the main table's" not in lines["sweep"]["b"]  # b's main seeds are the sweep's
    assert "seed 0 (one draw), cell M 5 x lambda 0.08 (the main table's) also at seeds 1-4;" in lines["ablation"]["a"]


def test_each_caption_prints_its_sections_protocol_block_written_once_in_python():
    cfg = grid.validate_config({
        "models": {"a": {"id": "tiny-a", "label": "A"}, "b": {"id": "tiny-b", "label": "B"}},
        "main": {"sparsity": 0.7, "methods": ["wanda"]},
    }, SCHEMA)
    lines = captions.caption_protocols(cfg, grid.model_specs(cfg))
    blocks = captions.caption_blocks(lines)
    assert blocks["main"] == f"Protocol:\n\n- {lines['main']['a']}\n- {lines['main']['b']}\n"
    assert blocks["statistics"]["b"] == f"Protocol:\n\n- {lines['statistics']['b']}\n"
    captions_dir = Path(__file__).resolve().parents[1] / "report"
    for rst in sorted(captions_dir.glob("*.rst")):
        if rst.name == "workflow.rst":  # the front page: no protocol
            continue
        text = rst.read_text()
        assert "Protocol:" not in text and text.count("snakemake.config.report_protocol[") == 1, rst.name
