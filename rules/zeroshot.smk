# Zero-shot accuracy (lm-evaluation-harness) of the grid points the config's zero_shot section
# names, in jobs of their own: a zeroshot job prunes the model again exactly as its prune job does
# (same settings; the pruning is deterministic), skips perplexity (eval_dataset None) and writes
# runs/<model>/<run>/zeroshot.json. Prune jobs never run zero-shot, so a point's perplexity never
# waits for it, and the perplexity tables and figures (rules/report.smk) do not read zeroshot.json.
# OWL points load the calibrate rule's statistics, an ancient() input as for the prune jobs.
# Targets: `zero_shot` (every zeroshot.json and the zero-shot table), or one zeroshot.json by path.


rule zeroshot:
    input:
        stats=run_stats,
    output:
        zeroshot=ZEROSHOT,
    log:
        notebook=f"{RUN_DIR}/zeroshot.ipynb",
        log=f"{LOGS}/zeroshot/{{model}}/{{run}}.log",
    params:
        yaml=lambda wc: to_yaml(zeroshot_notebook_params(wc.model, wc.run)),
        params_file=f"{RUN_DIR}/zeroshot.params.yaml",
    wildcard_constraints:
        run=wildcard_choices(rid for _, rid in ZS_RUNS),
    # Below the prune jobs: with both ready, Snakemake starts the perplexity runs first.
    priority: -1
    threads: lambda wc: res("zeroshot", "threads", wc.model)
    resources:
        gpu=lambda wc: res("zeroshot", "gpu", wc.model),
        mem_mb=lambda wc: res("zeroshot", "mem_mb", wc.model),
        slurm_extra=lambda wc: res("zeroshot", "slurm_extra", wc.model),
        runtime=lambda wc: res("zeroshot", "runtime", wc.model),
    conda:
        CONDA_ENV
    shell:
        ENV_SETUP + papermill("zeroshot.ipynb")


if config["zero_shot"]:

    # The zero-shot table, from zeroshot.json files only; `snakemake zero_shot` builds every
    # zeroshot.json and this table (the rule `zeroshot` is the per-point job, so the target that
    # gathers them is named after the config section and the table).
    rule zero_shot:
        input:
            [zeroshot_path(k) for k in ZS_RUNS],
        output:
            [report_item(f"{TABLES_DIR}/{name}") for name in report.table_files(SPEC, ["zero_shot"])],
        log:
            notebook=f"{TABLES_DIR}/zero_shot.ipynb",
            log=f"{LOGS}/zero_shot.log",
        params:
            yaml=to_yaml(report_params(ZS_RUNS, TABLES_DIR, ["zero_shot"], path=zeroshot_path)),
            params_file=f"{TABLES_DIR}/zero_shot.params.yaml",
        threads: 1
        resources:
            gpu=0,
            mem_mb=res("report", "mem_mb"),
            slurm_extra=res("report", "slurm_extra"),
            runtime=res("report", "runtime"),
        conda:
            CONDA_ENV
        shell:
            ENV_SETUP + papermill("tables.ipynb")

else:

    # No zero_shot section: `snakemake tables figures zero_shot` still works, and does nothing here.
    rule zero_shot:
        log:
            f"{LOGS}/zero_shot.log",
        localrule: True
        shell:
            "echo 'no zero_shot section in the config: no zero-shot table' > {log}"
