# Tables and figures: cheap, from result.json files only (restyling never reruns a model). The
# zero-shot table is not here: it reads zeroshot.json files (rules/zeroshot.smk), so these never
# wait for zero-shot jobs.


rule tables:
    input:
        [result_path(k) for k in RUNS],
    output:
        [report_item(f"{TABLES_DIR}/{name}") for name in report.table_files(SPEC, PPL_TABLE_SECTIONS)],
    log:
        notebook=f"{TABLES_DIR}/tables.ipynb",
        log=f"{LOGS}/tables.log",
    params:
        yaml=to_yaml(report_params(list(RUNS), TABLES_DIR, PPL_TABLE_SECTIONS)),
        params_file=f"{TABLES_DIR}/tables.params.yaml",
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


rule figures:
    input:
        [result_path(k) for k in RUNS],
    output:
        [report_item(f"{FIGURES_DIR}/{name}") for name in report.figure_files(SPEC)],
    log:
        notebook=f"{FIGURES_DIR}/figures.ipynb",
        log=f"{LOGS}/figures.log",
    params:
        yaml=to_yaml(report_params(list(RUNS), FIGURES_DIR, report.FIGURE_SECTIONS)),
        params_file=f"{FIGURES_DIR}/figures.params.yaml",
    threads: 1
    resources:
        gpu=0,
        mem_mb=res("report", "mem_mb"),
        slurm_extra=res("report", "slurm_extra"),
        runtime=res("report", "runtime"),
    conda:
        CONDA_ENV
    shell:
        ENV_SETUP + papermill("figures.ipynb")


if config["ablation"]:

    # Only the ablation grid (with its uniform baseline run), its tables and heatmaps
    # (`snakemake ablation`); the full `tables` and `figures` hold them as well.
    rule ablation:
        input:
            [result_path(k) for k in ablation_runs()],
        output:
            [f"{ABLATION_DIR}/{name}" for name in report.table_files(SPEC, ["ablation"])],
            [f"{ABLATION_DIR}/{name}" for name in report.figure_files(SPEC, ["ablation"])],
        log:
            tables=f"{ABLATION_DIR}/tables.ipynb",
            figures=f"{ABLATION_DIR}/figures.ipynb",
            log=f"{LOGS}/ablation.log",
        params:
            tables_yaml=to_yaml(report_params(ablation_runs(), ABLATION_DIR, ["ablation"])),
            figures_yaml=to_yaml(report_params(ablation_runs(), ABLATION_DIR, ["ablation"])),
            tables_file=f"{ABLATION_DIR}/tables.params.yaml",
            figures_file=f"{ABLATION_DIR}/figures.params.yaml",
        threads: 1
        resources:
            gpu=0,
            mem_mb=res("report", "mem_mb"),
            slurm_extra=res("report", "slurm_extra"),
            runtime=res("report", "runtime"),
        conda:
            CONDA_ENV
        shell:
            ENV_SETUP
            + papermill("tables.ipynb", "{log.tables}", "{params.tables_file}", yaml_param="tables_yaml")
            + " && "
            + papermill("figures.ipynb", "{log.figures}", "{params.figures_file}", yaml_param="figures_yaml")
