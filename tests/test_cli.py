"""End to end through the CLI on tiny models: every method, result file, determinism, bad input."""

import json
import subprocess
import sys

import pytest

from owl.cli import main

REQUIRED_KEYS = {
    "model", "prune_method", "sparsity_ratio", "sparsity_type", "Hyper_m", "Lamda", "nsamples", "seqlen", "seed",
    "achieved_sparsity", "layer_sparsities", "layer_achieved_sparsities", "outlier_ratios", "ppl", "eval_windows",
    "timings_s", "versions",
}
SMALL = ["--nsamples", "4", "--seqlen", "32", "--eval_limit", "3", "--device", "cpu", "--calib_batch_size", "2", "-q"]


def run(model_dir, out, *flags):
    code = main(["prune", "--model", str(model_dir), "--save", str(out), *SMALL, *flags])
    assert code == 0
    return json.loads((out / "result.json").read_text())


@pytest.mark.parametrize(
    "method, flags",
    [
        ("magnitude", []),
        ("wanda", []),
        ("sparsegpt", []),
        ("magnitude_owl", ["--Lamda", "0.1"]),
        ("wanda_owl", ["--Lamda", "0.1"]),
        ("sparsegpt_owl", ["--Lamda", "0.1"]),
    ],
)
def test_every_method_on_llama(tiny_model_dirs, owl_env, method, flags):
    result = run(tiny_model_dirs["llama"], owl_env / "out", "--prune_method", method, "--sparsity_ratio", "0.6", *flags)
    assert REQUIRED_KEYS <= set(result)
    assert abs(result["achieved_sparsity"] - 0.6) < 0.01
    assert abs(sum(result["layer_sparsities"]) / len(result["layer_sparsities"]) - 0.6) < 1e-9
    assert result["eval_windows"] == 3 and result["ppl"]["wikitext2"] > 1
    if "owl" in method:
        assert len(result["outlier_ratios"]) == 4 and max(result["layer_sparsities"]) - min(result["layer_sparsities"]) == pytest.approx(0.2)
        # More outliers, fewer pruned weights.
        order = sorted(range(4), key=lambda i: result["outlier_ratios"][i])
        assert [result["layer_sparsities"][i] for i in order] == sorted(result["layer_sparsities"], reverse=True)
    else:
        assert result["outlier_ratios"] is None and len(set(result["layer_sparsities"])) == 1


@pytest.mark.parametrize("family", ["mistral", "opt", "qwen2", "gemma3"])
def test_owl_wanda_and_sparsegpt_on_other_families(tiny_model_dirs, owl_env, family):
    for method in ("wanda_owl", "sparsegpt"):
        result = run(tiny_model_dirs[family], owl_env / method, "--prune_method", method, "--sparsity_ratio", "0.5")
        assert abs(result["achieved_sparsity"] - 0.5) < 0.01


def test_nm_and_mixed_nm(tiny_model_dirs, owl_env):
    result = run(tiny_model_dirs["llama"], owl_env / "nm", "--prune_method", "wanda", "--sparsity_type", "2:4", "--sparsity_ratio", "0.5")
    assert result["achieved_sparsity"] == pytest.approx(0.5)
    mixed = run(
        tiny_model_dirs["llama"], owl_env / "mixed", "--prune_method", "wanda_owl_structure", "--sparsity_type", "4:8",
        "--sparsity_ratio", "0.5", "--Lamda", "2", "--Hyper_m", "3",
    )
    counts = [n for n, m in mixed["layer_nm"]]
    assert all(1 <= n <= 7 for n in counts) and len(set(counts)) > 1
    assert mixed["layer_achieved_sparsities"] == pytest.approx([n / 8 for n in counts])


def test_variant_and_dense(tiny_model_dirs, owl_env):
    variant = run(tiny_model_dirs["llama"], owl_env / "v", "--prune_method", "wanda", "--use_variant", "--sparsity_ratio", "0.5")
    assert abs(variant["achieved_sparsity"] - 0.5) < 0.01
    dense = run(tiny_model_dirs["llama"], owl_env / "d", "--prune_method", "dense", "--sparsity_ratio", "0")
    zero = run(tiny_model_dirs["llama"], owl_env / "z", "--prune_method", "wanda", "--sparsity_ratio", "0")
    assert dense["achieved_sparsity"] == 0 and zero["achieved_sparsity"] == 0
    assert dense["ppl"] == zero["ppl"]


def test_deterministic_and_statistics_reused(tiny_model_dirs, owl_env):
    args = ("--prune_method", "wanda_owl", "--sparsity_ratio", "0.6", "--Lamda", "0.1")
    first = run(tiny_model_dirs["llama"], owl_env / "a", *args)
    second = run(tiny_model_dirs["llama"], owl_env / "b", *args)
    assert first["ppl"] == second["ppl"] and first["layer_sparsities"] == second["layer_sparsities"]
    assert first["timings_s"]["calibration"] > 0 and second["timings_s"]["calibration"] == 0  # reused
    other_seed = run(tiny_model_dirs["llama"], owl_env / "c", *args, "--seed", "1")
    assert other_seed["ppl"] != first["ppl"]


def test_save_model_roundtrip(tiny_model_dirs, owl_env):
    out = owl_env / "pruned"
    run(tiny_model_dirs["llama"], owl_env / "r", "--prune_method", "magnitude", "--sparsity_ratio", "0.5", "--save_model", str(out))
    reloaded = run(out, owl_env / "r2", "--prune_method", "dense", "--sparsity_ratio", "0")
    assert reloaded["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)


BAD_INPUTS = [
    (["--prune_method", "foo"], "--prune_method 'foo'"),
    (["--sparsity_type", "dense"], "--sparsity_type 'dense'"),
    (["--sparsity_type", "4:2", "--sparsity_ratio", "0.5"], "malformed"),
    (["--sparsity_type", "2-4"], "--sparsity_type '2-4'"),
    (["--sparsity_ratio", "1.0"], "--sparsity_ratio 1.0"),
    (["--sparsity_ratio", "-0.1"], "--sparsity_ratio -0.1"),
    (["--prune_method", "wanda_owl", "--sparsity_ratio", "0.95", "--Lamda", "0.2"], "outside (0, 1)"),
    (["--prune_method", "wanda_owl", "--Hyper_m", "0"], "--Hyper_m 0"),
    (["--nsamples", "0"], "--nsamples 0"),
    (["--seqlen", "100000"], "--seqlen 100000"),
    (["--dtype", "float8"], "--dtype 'float8'"),
    (["--eval_dtype", "int8"], "--eval_dtype 'int8'"),
    (["--device", "tpu"], "--device 'tpu'"),
]


@pytest.mark.parametrize("flags, expected", BAD_INPUTS)
def test_bad_input_one_line_error_no_result(tiny_model_dirs, owl_env, capsys, flags, expected):
    out = owl_env / "bad"
    argv = ["prune", "--model", str(tiny_model_dirs["llama"]), "--save", str(out), *SMALL, *flags]
    # later flags win in argparse, so the bad value overrides SMALL's
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("owl: error:") and expected in errors[0]
    assert not (out / "result.json").exists()


def test_missing_model_and_data(owl_env, tiny_model_dirs, capsys, monkeypatch):
    assert main(["prune", "--model", str(owl_env / "no-such-model"), *SMALL]) == 2
    assert "no-such-model" in capsys.readouterr().err
    monkeypatch.setenv("OWL_DATA_DIR", str(owl_env / "no-data"))
    assert main(["prune", "--model", str(tiny_model_dirs["llama"]), "--save", str(owl_env / "x"), *SMALL]) == 2
    assert "OWL_DATA_DIR" in capsys.readouterr().err
    assert not (owl_env / "x" / "result.json").exists()


def test_module_entry_point_exit_code(tiny_model_dirs, owl_env):
    proc = subprocess.run(
        [sys.executable, "-m", "owl", "prune", "--model", str(tiny_model_dirs["llama"]), "--prune_method", "bogus"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("owl: error: --prune_method 'bogus'")


def test_seqlen_the_calibration_data_cannot_supply(tiny_model_dirs, owl_env, capsys, monkeypatch):
    data = owl_env / "short-docs"
    (data / "c4").mkdir(parents=True)
    (data / "c4" / "c4-train.00000-of-01024.head1000.jsonl").write_text(json.dumps({"text": "too short"}) + "\n")
    (data / "wikitext-2-raw-v1").mkdir()
    (data / "wikitext-2-raw-v1" / "test.jsonl").write_text(json.dumps({"text": " word" * 500}) + "\n")
    monkeypatch.setenv("OWL_DATA_DIR", str(data))
    assert main(["prune", "--model", str(tiny_model_dirs["llama"]), "--save", str(owl_env / "o"), *SMALL]) == 2
    assert "--seqlen 32 is too long for the calibration data" in capsys.readouterr().err
    assert not (owl_env / "o" / "result.json").exists()


def test_rerun_reproduces_a_result_and_flags_a_mismatch(tiny_model_dirs, owl_env, capsys):
    result = run(tiny_model_dirs["llama"], owl_env / "orig", "--prune_method", "sparsegpt_owl", "--sparsity_ratio", "0.5", "--Lamda", "0.1")
    path = owl_env / "orig" / "result.json"
    assert main(["rerun", str(path), "-q"]) == 0
    assert "same to 4 significant digits" in capsys.readouterr().out
    result["ppl"]["wikitext2"] *= 1.01
    path.write_text(json.dumps(result))
    assert main(["rerun", str(path), "-q"]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
    assert main(["rerun", str(owl_env / "missing.json")]) == 2


def test_eval_dtype_converts_only_the_evaluation(tiny_model_dirs, owl_env):
    args = ("--prune_method", "wanda", "--sparsity_ratio", "0.5")
    fp32 = run(tiny_model_dirs["llama"], owl_env / "f", *args)
    mixed = run(tiny_model_dirs["llama"], owl_env / "m", *args, "--eval_dtype", "bfloat16", "--save_model", str(owl_env / "saved"))
    assert mixed["eval_dtype"] == "bfloat16" and fp32["eval_dtype"] == "float32"
    assert mixed["layer_achieved_sparsities"] == fp32["layer_achieved_sparsities"]  # same pruning
    assert mixed["ppl"]["wikitext2"] != fp32["ppl"]["wikitext2"]
    assert abs(mixed["ppl"]["wikitext2"] / fp32["ppl"]["wikitext2"] - 1) < 0.05
    assert '"float32"' in (owl_env / "saved" / "config.json").read_text()  # saved before the conversion


def test_attn_implementation_is_passed_to_the_model_and_recorded(tiny_model_dirs, owl_env, capsys):
    args = ("--prune_method", "wanda", "--sparsity_ratio", "0.5", "--seed", "1")
    default = run(tiny_model_dirs["llama"], owl_env / "default", *args)
    eager = run(tiny_model_dirs["llama"], owl_env / "eager", *args, "--attn_implementation", "eager")
    assert default["attn_implementation"] == "sdpa" and default["settings"]["attn_implementation"] is None
    assert eager["attn_implementation"] == "eager" and eager["settings"]["attn_implementation"] == "eager"
    assert abs(eager["ppl"]["wikitext2"] / default["ppl"]["wikitext2"] - 1) < 0.01  # another float path, same arithmetic
    # a rerun replays the recorded kernel and calibration seed
    assert main(["rerun", str(owl_env / "eager" / "result.json"), "--save", str(owl_env / "again"), "-q"]) == 0
    again = json.loads((owl_env / "again" / "result.json").read_text())
    assert (again["attn_implementation"], again["seed"]) == ("eager", 1)
    capsys.readouterr()
    assert main(["prune", "--model", str(tiny_model_dirs["llama"]), "--save", str(owl_env / "bad"), *SMALL,
                 "--attn_implementation", "flash"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["owl: error: --attn_implementation 'flash' is not allowed; choose one of eager, sdpa"]
    assert not (owl_env / "bad").exists()
