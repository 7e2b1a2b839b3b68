# What the HTML report shows: `snakemake --report results/<name>/report.html` (or .zip) gathers the
# outputs marked with report_item() (tables, figures, LOD charts, allocations, the zero-shot table)
# into one category per section, each file captioned by report/<caption>.rst (what it shows and
# the protocol, rendered from the config). The report front page is report/workflow.rst.

from snakemake.io import report as report_flag  # `report` is owl.report in this workflow (rules/common.smk)

report: "../report/workflow.rst"

REPORT_CATEGORIES = {"main": "1. Main table", "sweep": "2. Sweep", "ablation": "3. Ablation", "layerwise": "4. Layerwise",
                     "zero_shot": "5. Zero-shot", "zoo": "6. Allocation zoo"}
REPORT_KINDS = {".md": "table (Markdown)", ".csv": "table (CSV)", ".png": "figure (PNG)", ".pdf": "figure (PDF)"}


def _report_section(stem):
    """The section of a table or figure named <section>[_<model key>] (owl.report's file names)."""
    return next(s for s in REPORT_CATEGORIES if stem == s or stem.startswith(s + "_"))


def _model_of(stem, labels_by_name):
    """The label of the model whose (file-safe) key ends ``stem`` (the longest such key), else all models."""
    names = [n for n in labels_by_name if stem.endswith("_" + n)]
    return labels_by_name[max(names, key=len)] if names else "all models"


def report_item(path, section=None, caption=None):
    """``path`` marked for the report. Tables and figures (<section>[_<kind>][_<model key>].<ext>)
    find their section and model from the name; files under a {model} wildcard (LOD charts,
    allocations) name their section and caption."""
    name = os.path.basename(path)
    stem, ext = os.path.splitext(name)
    section = section or _report_section(stem)
    if "{model}" in path:
        model = lambda wc: MODELS[wc.model]["label"]
    else:
        label = _model_of(stem, {report.safe_name(k): m["label"] for k, m in MODELS.items()})
        model = lambda wc: label
    return report_flag(path, caption=f"../report/{caption or section}.rst", category=REPORT_CATEGORIES[section],
                  subcategory=model, labels=lambda wc: {"model": model(wc), "file": name, "kind": REPORT_KINDS.get(ext, ext)})
