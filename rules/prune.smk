# One pruning run per grid point: prune, evaluate WikiText-2 perplexity, write result.json. Never
# zero-shot: the points of the config's zero_shot section get a zeroshot job of their own
# (rules/zeroshot.smk), so their perplexity does not wait for it. OWL runs load the model's
# dense statistics from the calibrate rule's statistics.pt (stats_path) and never recompute them;
# the other methods do not use the dense statistics (Wanda and SparseGPT collect theirs during the
# sequential pruning pass), so they need not wait for the calibrate job.
# The statistics are an ancient() input: a rerun of the calibrate job (e.g. after adding an M to
# calibration.hyper_ms or the ablation, which only changes lod.json) does not rerun the OWL runs.
# What the statistics depend on (dataset, nsamples, seqlen, seed, dtype) is in their path, so a
# new calibration setting is a new, missing file, which does rerun them.


rule prune:
    input:
        stats=run_stats,
    output:
        result=RESULT,
    log:
        notebook=f"{RUN_DIR}/prune.ipynb",
        log=f"{LOGS}/prune/{{model}}/{{run}}.log",
    params:
        yaml=lambda wc: to_yaml(prune_notebook_params(wc.model, wc.run)),
        params_file=f"{RUN_DIR}/prune.params.yaml",
    threads: lambda wc: res("prune", "threads", wc.model)
    resources:
        gpu=lambda wc: res("prune", "gpu", wc.model),
        mem_mb=lambda wc: res("prune", "mem_mb", wc.model),
        slurm_extra=lambda wc: res("prune", "slurm_extra", wc.model),
        runtime=prune_runtime,
    conda:
        CONDA_ENV
    shell:
        ENV_SETUP + papermill("prune.ipynb")
