# The dense statistics pass: once per model and calibration setting ({calib}, e.g.
# c4-n128-len2048-seed0-float16: one per calibration seed), shared by every OWL run of the model
# at that seed. Writes the Wanda statistics (statistics.pt, the OWL prune jobs' stats_path), the
# layerwise outlier distribution for every M (lod.json) and its bar chart.


rule calibrate:
    output:
        stats=STATS,
        lod=LOD,
        figures=[report_item(f, "layerwise", "lod") for f in multiext(f"{CALIB_DIR}/lod", ".png", ".pdf")],
    log:
        notebook=f"{CALIB_DIR}/calibrate.ipynb",
        log=f"{LOGS}/calibrate/{{model}}/{{calib}}.log",
    params:
        yaml=lambda wc: to_yaml(calibrate_params(wc.model, wc.calib)),
        params_file=f"{CALIB_DIR}/calibrate.params.yaml",
    threads: lambda wc: res("calibrate", "threads", wc.model)
    resources:
        gpu=lambda wc: res("calibrate", "gpu", wc.model),
        mem_mb=lambda wc: res("calibrate", "mem_mb", wc.model),
        slurm_extra=lambda wc: res("calibrate", "slurm_extra", wc.model),
        runtime=lambda wc: res("calibrate", "runtime", wc.model),
    conda:
        CONDA_ENV
    shell:
        ENV_SETUP + papermill("calibrate.ipynb")


# OWL's per-block sparsities for every (sparsity, M, lambda) of a model's OWL runs at one seed, from
# that seed's lod.json alone (no model is loaded): what the prune jobs will use, to look at before
# spending GPU hours.
rule allocate:
    input:
        lod=lambda wc: lod_path(wc.model, int(wc.seed)),
    output:
        allocation=f"{ALLOC_DIR}/allocation.json",
        figures=[report_item(f, "layerwise", "allocation") for f in multiext(f"{ALLOC_DIR}/allocation", ".png", ".pdf")],
    log:
        notebook=f"{ALLOC_DIR}/allocate.ipynb",
        log=f"{LOGS}/allocate/{{model}}/seed{{seed}}.log",
    params:
        yaml=lambda wc: to_yaml(allocate_params(wc.model, int(wc.seed))),
        params_file=f"{ALLOC_DIR}/allocate.params.yaml",
    threads: 1
    resources:
        gpu=0,
        mem_mb=res("report", "mem_mb"),
        slurm_extra=res("report", "slurm_extra"),
        runtime=res("report", "runtime"),
    conda:
        CONDA_ENV
    shell:
        ENV_SETUP + papermill("allocate.ipynb")
