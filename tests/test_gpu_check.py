"""The GPU check can fail: run with the CPU in the GPU's place (--self-test), it exits 0 when its
checks pass and non-zero, naming the check in its JSON, when one is broken on purpose."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OTHER_FAMILIES = "cpu_vs_device/mistral,cpu_vs_device/opt,cpu_vs_device/qwen2,cpu_vs_device/gemma3"


def gpu_check(tmp_path, skip: str, broken: str = "") -> tuple[int, dict]:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OWL_GPU_CHECK_BREAK": broken, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--self-test", "--out", str(out), "--skip", skip],
                          capture_output=True, text=True, env=env, timeout=900)
    return proc.returncode, json.loads(out.read_text())


@pytest.mark.parametrize("broken", ["", "cpu_vs_device/llama"])
def test_gpu_check_fails_when_a_check_is_broken(tmp_path, broken):
    code, report = gpu_check(tmp_path, f"{OTHER_FAMILIES},host_streaming_decision,block_by_block_under_cap,cli_embedded_model", broken)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["self_test"] and report["device"] == "cpu"
    assert checks["cli_embedded_model"]["passed"] is None and checks["cpu_vs_device/opt"]["skipped"]  # never counted as passed
    if broken:
        assert code == 1 and report["failed"] == [broken] and checks[broken]["passed"] is False
    else:
        assert code == 0 and report["passed"] and checks["cpu_vs_device/llama"]["passed"] and checks["bad_device_refused"]["passed"]
        assert checks["cpu_vs_device/llama"]["details"]["sparsegpt"]["mask_agreement"] == 1.0


def test_gpu_check_streaming_and_block_by_block_checks_fail_when_broken(tmp_path):
    code, report = gpu_check(tmp_path, f"cpu_vs_device,bad_device_refused,cli_embedded_model", "block_by_block_under_cap")
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 1 and report["failed"] == ["block_by_block_under_cap"]
    assert checks["host_streaming_decision"]["passed"] and checks["host_streaming_decision"]["details"]["decided"] == ["cpu"]


def test_gpu_check_sh_is_strict_and_offline():
    script = (REPO / "bench" / "gpu_check.sh").read_text()
    assert "set -euo pipefail" in script and "pip install" not in script and "| tail" not in script and "| tee" not in script
    assert "bench/gpu_check.py" in script and "HF_HUB_OFFLINE=1" in script
