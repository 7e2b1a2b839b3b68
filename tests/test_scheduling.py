"""Where jobs run: GPU jobs on one machine, the SLURM profile, and the tiny workflow on SLURM.

Locally a run with GPU jobs must hand them out one at a time (`--resources gpu=1`); on SLURM each
job asks for its GPUs, its partition and, per model, extra sbatch options (80 GB cards). The last
test runs the tiny workflow through a real single-node cluster (profiles/slurm/local-cluster.sh,
root and Debian's SLURM packages) and compares it with a local run: `make slurm-check` runs it;
elsewhere it is skipped.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from owl import grid
from owl.testing import save_tiny_model, write_tiny_data_dir
from test_workflow import CONFIGS, REPO, job_blocks, job_counts, snakemake, zero_shot_mirror

PROFILE = REPO / "profiles" / "slurm"
PLUGINS = ("snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep")
PARTITIONS = {"OWL_SLURM_PARTITION": "cpu-queue", "OWL_SLURM_GPU_PARTITION": "gpu-queue"}
SCHEMA = yaml.safe_load((CONFIGS / "schema.yaml").read_text())


def _profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(rf"({'|'.join(PLUGINS)})==([0-9][0-9.]*)", text))


def _plugin_installed() -> bool:
    try:
        importlib.metadata.version(PLUGINS[0])
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _resources(block: str) -> dict[str, str]:
    """A job's resources as a dry run prints them."""
    return dict(item.split("=", 1) for item in re.search(r"resources: (.*)", block).group(1).split(", "))


def _job_kind(rule: str) -> str:
    return rule if rule in grid.MODEL_JOB_KINDS else "report"


# ---- the profile -------------------------------------------------------------------------------
def test_the_profile_and_the_requirements_pin_the_same_plugin_versions():
    profile = _pins((PROFILE / "config.yaml").read_text())
    assert set(profile) == set(PLUGINS)
    assert _pins((REPO / "envs" / "requirements.txt").read_text()) == profile
    assert _pins((REPO / "envs" / "environment.yml").read_text()) == profile
    workflow_extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["workflow"]
    assert any(dep.startswith(PLUGINS[0]) for dep in workflow_extra)
    if _plugin_installed():  # the environment the tests run in is the one the profile names
        assert {name: importlib.metadata.version(name) for name in PLUGINS} == profile


def test_the_profile_never_resubmits_a_failed_job_and_sends_model_jobs_to_the_gpu_partition():
    profile = _profile()
    assert profile["executor"] == "slurm"
    assert profile["retries"] == 0 and profile["slurm-requeue"] is True  # SLURM requeues lost jobs, nothing else reruns
    assert profile["default-resources"]["slurm_partition"] == "'$OWL_SLURM_PARTITION'"
    assert set(profile["set-resources"]) == set(grid.MODEL_JOB_KINDS)  # calibrate, prune and zeroshot
    assert all(r == {"slurm_partition": "'$OWL_SLURM_GPU_PARTITION'"} for r in profile["set-resources"].values())


@pytest.mark.skipif(not _plugin_installed(), reason="the SLURM executor plugin is not installed")
def test_a_dry_run_through_the_profile_gives_each_job_its_partition_and_the_configs_resources(tmp_path):
    proc = snakemake(tmp_path, "-n", "reproduce_all", "--profile", str(PROFILE), configfile=CONFIGS / "tiny.yaml",
                     env=PARTITIONS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    blocks = job_blocks(proc.stdout)
    models = grid.model_specs(grid.validate_config(yaml.safe_load((CONFIGS / "tiny.yaml").read_text()), SCHEMA))
    assert set(grid.MODEL_JOB_KINDS) <= set(blocks) and {"tables", "figures", "allocate"} <= set(blocks)
    for rule, rule_blocks in blocks.items():
        if rule == "reproduce_all":  # a local rule: never submitted
            continue
        want = models["tiny"]["resources"][_job_kind(rule)]
        partition = PARTITIONS["OWL_SLURM_GPU_PARTITION" if rule in grid.MODEL_JOB_KINDS else "OWL_SLURM_PARTITION"]
        for block in rule_blocks:
            resources = _resources(block)
            assert resources["slurm_partition"] == partition, (rule, resources)
            assert [resources[k] for k in ("gpu", "mem_mb", "runtime")] == [str(want[k]) for k in ("gpu", "mem_mb", "runtime")], rule


def test_the_paper_asks_for_80_gb_gpus_for_llama_30b_and_65b_in_every_model_job(tmp_path):
    proc = snakemake(tmp_path, "-n", "reproduce_all", configfile=CONFIGS / "paper.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    blocks = job_blocks(proc.stdout)
    seen = set()
    for rule in grid.MODEL_JOB_KINDS:
        for block in blocks[rule]:
            model = re.search(r"wildcards: model=([^,\s]+)", block).group(1)
            resources = _resources(block)
            # zeroshot jobs too; LLaMA-65B's zero-shot spreads over two (owl.memory's plan)
            assert resources["gpu"] == ("2" if (rule, model) == ("zeroshot", "llama-65b") else "1"), (rule, model)
            big = model in ("llama-30b", "llama-65b")
            assert resources["slurm_extra"] == ("--constraint=gpu80gb" if big else ""), (rule, model)
            seen.add((rule, big))
    assert seen == {(rule, big) for rule in grid.MODEL_JOB_KINDS for big in (True, False)}


# ---- GPUs on one machine -------------------------------------------------------------------------
@pytest.fixture()
def gpu_prune_config(tmp_path) -> Path:
    """config/tiny.yaml with prune jobs that ask for a GPU (on the CPU: the scheduling is what counts)."""
    cfg = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    cfg["resources"]["prune"]["gpu"] = 1
    path = tmp_path / "tiny-gpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("resources", [(), ("--resources", "gpu=2")], ids=["no gpu resource", "gpu=2"])
def test_a_local_run_with_gpu_jobs_is_refused_unless_they_run_one_at_a_time(tmp_path, gpu_prune_config, resources):
    proc = snakemake(tmp_path, "results/tiny/runs/tiny/dense/result.json", "--cores", "1", *resources,
                     configfile=gpu_prune_config)
    assert proc.returncode == 1
    assert "1 job(s) need a GPU (e.g. prune" in proc.stderr and "run locally with --resources gpu=1" in proc.stderr
    assert not (tmp_path / "results" / "tiny" / "runs").exists()  # refused before any job


def test_a_local_run_with_gpu_jobs_runs_with_one_gpu(tmp_path, gpu_prune_config):
    save_tiny_model(tmp_path / "tiny-model")
    env = {"OWL_DATA_DIR": str(write_tiny_data_dir(tmp_path / "tiny-data")), "OWL_CACHE_DIR": str(tmp_path / "cache")}
    proc = snakemake(tmp_path, "results/tiny/runs/tiny/dense/result.json", "--cores", "1", "--resources", "gpu=1",
                     configfile=gpu_prune_config, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "results/tiny/runs/tiny/dense/result.json").read_text())["device"] == "cpu"


def test_a_dry_run_needs_no_gpu_resource(tmp_path, gpu_prune_config):
    proc = snakemake(tmp_path, "-n", "results/tiny/runs/tiny/dense/result.json", configfile=gpu_prune_config)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("change, message", [
    (lambda c: c["settings"].update(device=None), "models.tiny: settings.device is null"),
    (lambda c: c["settings"].update(device="cuda"), "models.tiny: resources.calibrate.gpu is 0 but settings.device is cuda"),
    (lambda c: (c["settings"].update(device="cuda:1"), c["resources"].update(calibrate={"gpu": 1}, prune={"gpu": 1},
                                                                              zeroshot={"gpu": 0})),
     "models.tiny: resources.zeroshot.gpu is 0 but settings.device is cuda:1"),
], ids=["device null", "cuda without gpu", "zeroshot without gpu"])
def test_a_config_names_its_device_and_gives_cuda_jobs_a_gpu(change, message):
    cfg = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    change(cfg)
    models = grid.model_specs(grid.validate_config(cfg, SCHEMA))
    with pytest.raises(grid.ConfigError, match=re.escape(message)):
        grid.check_devices(models)


@pytest.mark.parametrize("name", ["default", "paper", "tiny", "default-seeds"])
def test_the_shipped_configs_name_their_devices(name):
    cfg = grid.validate_config(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()), SCHEMA)
    grid.check_devices(grid.model_specs(cfg))


# ---- the tiny workflow through a real SLURM cluster ----------------------------------------------
def _workdir(root: Path) -> dict:
    root.mkdir(parents=True)
    save_tiny_model(root / "tiny-model")
    write_tiny_data_dir(root / "tiny-data")
    if zero_shot_mirror() is not None:
        (root / "tiny-data" / "zeroshot").symlink_to(zero_shot_mirror())
    return {"OWL_DATA_DIR": str(root / "tiny-data"), "OWL_CACHE_DIR": str(root / "cache"), "HF_HUB_OFFLINE": "1"}


SACCT_FIELDS = "JobID,Comment%70,Partition,Account,AllocCPUS,ReqMem,Timelimit,State,ExitCode,Elapsed"


@pytest.mark.skipif(not os.environ.get("OWL_SLURM_CHECK"), reason="needs the local SLURM cluster: make slurm-check")
def test_the_tiny_workflow_through_slurm_submits_every_job_with_its_resources_and_matches_the_local_run(tmp_path):
    keep = Path(os.environ.get("OWL_SLURM_CHECK_DIR") or tmp_path)
    keep.mkdir(parents=True, exist_ok=True)
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    env = _workdir(local)
    start = time.perf_counter()
    proc = snakemake(local, "reproduce_all", "--cores", "2", configfile=CONFIGS / "tiny.yaml", env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    local_seconds, local_jobs = time.perf_counter() - start, job_counts(proc.stdout + proc.stderr)

    env = {**_workdir(cluster), "OWL_SLURM_PARTITION": "owl-local", "OWL_SLURM_GPU_PARTITION": "owl-local"}
    since = (datetime.datetime.now() - datetime.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    start = time.perf_counter()
    # status checks every few seconds, not the plugin's 40 s for a busy cluster (a tiny job takes ~30 s)
    proc = snakemake(cluster, "reproduce_all", "--profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", "5",
                     configfile=CONFIGS / "tiny.yaml", env=env, timeout=2400)
    log = proc.stdout + proc.stderr
    (keep / "snakemake-slurm.log").write_text(log)
    assert proc.returncode == 0, log[-3000:]
    slurm_seconds = time.perf_counter() - start
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    table = subprocess.run(["sacct", "-X", "--parsable2", "--starttime", since, "--name", run_id, f"--format={SACCT_FIELDS}"],
                           capture_output=True, text=True, check=True).stdout
    (keep / "sacct.txt").write_text(table)
    print(f"\nlocal run {local_seconds:.0f} s, SLURM run {slurm_seconds:.0f} s; log and job table in {keep}")

    # Every job but the local rule went through sbatch, once, and completed with the config's resources.
    header, *rows = [line.split("|") for line in table.strip().splitlines()]
    jobs = [dict(zip(header, row)) for row in rows]
    rules = [re.match(r"rule_(.+?)(?:_wildcards_.*)?$", job["Comment"]).group(1) for job in jobs]
    submitted = {rule: rules.count(rule) for rule in set(rules)}
    assert submitted == {rule: n for rule, n in local_jobs.items() if rule not in ("reproduce_all", "total")}
    assert len(re.findall(r"has been submitted with SLURM jobid", log)) == len(jobs)
    models = grid.model_specs(grid.validate_config(yaml.safe_load((CONFIGS / "tiny.yaml").read_text()), SCHEMA))
    for rule, job in zip(rules, jobs):
        want = models["tiny"]["resources"][_job_kind(rule)]
        assert (job["State"], job["ExitCode"], job["Partition"]) == ("COMPLETED", "0:0", "owl-local"), job
        assert job["ReqMem"] == f"{want['mem_mb']}M" and int(job["AllocCPUS"]) == want["threads"], job
        assert job["Timelimit"] == f"{want['runtime'] // 60:02d}:{want['runtime'] % 60:02d}:00", job

    # The same numbers as the local run: every result, every zero-shot accuracy, every table.
    out_local, out_cluster = local / "results" / "tiny", cluster / "results" / "tiny"
    results = sorted(p.relative_to(out_local) for p in out_local.rglob("result.json"))
    assert len(results) == local_jobs["prune"]
    for path in results:
        a, b = (json.loads((out / path).read_text()) for out in (out_local, out_cluster))
        for key in ("ppl", "achieved_sparsity", "layer_sparsities", "outlier_ratios"):
            assert a[key] == b[key], (path, key)
    for path in sorted(p.relative_to(out_local) for p in out_local.rglob("zeroshot.json")):
        a, b = (json.loads((out / path).read_text()) for out in (out_local, out_cluster))
        assert (a["zero_shot"], a["zero_shot_stderr"]) == (b["zero_shot"], b["zero_shot_stderr"]), path
    for table_file in sorted((out_local / "tables").glob("*.csv")):
        assert table_file.read_text() == (out_cluster / "tables" / table_file.name).read_text(), table_file.name
