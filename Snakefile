# Reproduction workflow of the OWL paper (Yin et al., ICML 2024): statistics, pruning runs,
# tables and figures, each step a papermill-run notebook under notebooks/.
#
#   snakemake --cores 2                                   # config/default.yaml, all of it
#   snakemake --cores 2 --configfile config/tiny.yaml    # a tiny random model (smoke test)
#   snakemake --profile profiles/slurm --configfile config/paper.yaml   # the paper, on SLURM
#
# Targets: reproduce_all (default; also `reproduce-all`), tables, figures, ablation, zero_shot,
# calibrate/prune/zeroshot outputs by path (results/<name>/runs/<model>/<run>/result.json).
# A config is validated against config/schema.yaml before any job runs. Data: set
# OWL_DATA_DIR (or `data_dir:` in the config) to a folder laid out like shared/data; otherwise
# the Hugging Face Hub is used.
from snakemake.utils import min_version

min_version("8.0")


include: "rules/common.smk"
include: "rules/html_report.smk"
include: "rules/calibrate.smk"
include: "rules/prune.smk"
include: "rules/report.smk"
include: "rules/zeroshot.smk"


# Everything: statistics and LOD charts, allocations, every run, every table and figure, and the
# zero-shot jobs and table when the config has a zero_shot section.
# `snakemake reproduce_all` (the rule) and `snakemake reproduce-all` (its top-level flag file)
# are the same job; the flag under results/<name>/ lists what was produced.
rule reproduce_all:
    default_target: True  # must be in the main Snakefile: Snakemake ignores it in included files
    input:
        lod=[lod_path(m, seed) for m, seeds in CALIB_SEEDS.items() for seed in seeds],
        lod_figures=[f"{calib_dir(m, seed)}/lod.png" for m, seeds in CALIB_SEEDS.items() for seed in seeds],
        allocations=allocation_files(),
        results=[result_path(k) for k in RUNS],
        tables=rules.tables.output,
        figures=rules.figures.output,
        zeroshot=[zeroshot_path(k) for k in ZS_RUNS],
        zero_shot=rules.zero_shot.output if config["zero_shot"] else [],
    output:
        flag=f"{OUT}/reproduce-all",
        top=touch("reproduce-all"),
    log:
        f"{LOGS}/reproduce_all.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"printf '%s\\n' {{input:q}} > {{output.flag}} && echo 'reproduced {OUT}' > {{log}}"
