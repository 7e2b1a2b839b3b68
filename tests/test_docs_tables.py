"""The figures README.md and docs/ quote are the committed ones: every results table they copy equals
its file under results/default/tables/, and every file they name or link to exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLES = REPO / "results" / "default" / "tables"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "results" / "README.md"]
# Pages the README and the docs index link to that other changes add (GPU use, SLURM, the allocation
# zoo); once they exist they are checked like every other link.
PAGES_ADDED_ELSEWHERE: set[str] = set()


def table_rows(text: str) -> list[str]:
    """The Markdown table lines of ``text``, in order."""
    return [line for line in text.splitlines() if line.startswith("|")]


def contains_block(text: str, rows: list[str]) -> bool:
    """``rows`` appear in ``text`` as consecutive lines."""
    lines = text.splitlines()
    return any(lines[i:i + len(rows)] == rows for i in range(len(lines) - len(rows) + 1))


def test_the_readme_main_table_is_the_committed_one():
    rows = table_rows((TABLES / "main.md").read_text())
    assert len(rows) >= 4  # header, rule, at least two methods
    assert contains_block((REPO / "README.md").read_text(), rows), "README.md's main table differs from results/default/tables/main.md"


@pytest.mark.parametrize("table", ["main", "sweep", "ablation_smollm2-135m", "zero_shot"])
def test_the_results_page_holds_every_committed_table(table):
    rows = table_rows((TABLES / f"{table}.md").read_text())
    assert contains_block((REPO / "docs" / "results.md").read_text(), rows), f"docs/results.md: {table}.md differs"


@pytest.mark.parametrize("table", ["zoo_tuning", "zoo", "zoo_pairs"])
def test_the_zoo_page_holds_every_committed_zoo_table(table):
    path = TABLES / f"{table}.md"
    if not path.exists():
        pytest.skip(f"{table}.md is not committed yet (the zoo grid runs across sessions)")
    rows = table_rows(path.read_text())
    assert contains_block((REPO / "docs" / "zoo.md").read_text(), rows), f"docs/zoo.md: {table}.md differs"


def test_contains_block_needs_every_row_in_order():
    assert contains_block("a\n| x |\n| y |\nb", ["| x |", "| y |"])
    assert not contains_block("| x |\nb\n| y |", ["| x |", "| y |"])


def _local_targets(doc: Path) -> list[str]:
    """Relative link and image targets of a Markdown file, and the `bench/results/...` and
    `results/...` files it names in backticks, as paths from the repository root."""
    text = doc.read_text()
    targets = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        targets.append(str(path.relative_to(REPO)))
    for name in re.findall(r"`((?:bench/)?results/[^`\s<>{}*]+\.(?:json|md|png|csv))`", text):
        targets.append(name)
    return targets


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_a_doc_names_exists(doc):
    missing = [t for t in _local_targets(doc) if t not in PAGES_ADDED_ELSEWHERE and not (REPO / t).exists()]
    assert not missing, f"{doc.relative_to(REPO)} names files that do not exist: {missing}"


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_github_anchor():
    assert github_anchor("`result.json`") == "resultjson"
    assert github_anchor("Data: the Hub or `OWL_DATA_DIR`") == "data-the-hub-or-owl_data_dir"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_section_a_doc_links_to_exists(doc):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+\.md)#([^)\s]+)\)", doc.read_text()):
        page = (doc.parent / target[0]).resolve()
        if str(page.relative_to(REPO)) in PAGES_ADDED_ELSEWHERE and not page.exists():
            continue
        headings = [github_anchor(h) for h in re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)]
        if target[1] not in headings:
            broken.append("#".join(target))
    assert not broken, f"{doc.relative_to(REPO)} links to sections that do not exist: {broken}"


def test_no_doc_names_a_cpu_its_records_do_not_confirm():
    """The AMD EPYC of the committed runs reported cpu family 25 model 17 (Zen 4, avx512_bf16),
    not a Zen 5."""
    for doc in [*DOCS, *sorted((REPO / "report").glob("*.rst"))]:
        assert "Zen 5" not in doc.read_text(), doc


def test_the_benchmark_ratios_quoted_are_the_committed_ones():
    """docs/benchmarks.md's new / old table: each cell is its JSON's paired ratio and interval."""
    import json

    text = (REPO / "docs" / "benchmarks.md").read_text()
    files = {"bfloat16": "results_speed_repeats.json", "float32": "results_speed_repeats_float32_eval.json"}
    rows = {"OWL w. Wanda": "wanda_owl, statistics cached", "OWL w. SparseGPT": "sparsegpt_owl, statistics cached"}
    phases = {"pruning pass": "pruning", "whole process": "process"}
    checked = 0
    for column, (evaluation, name) in enumerate(files.items()):
        ratios = json.loads((REPO / "bench" / "results" / name).read_text())["ratios"]
        for row, run in rows.items():
            for phase, key in phases.items():
                line = next(line for line in table_rows(text) if line.startswith(f"| {row}: {phase} |"))
                cell = line.split("|")[2 + column].strip()
                r = ratios[key][run]
                assert cell == f"{r['ratio']:.3f} [{r['lower']:.3f}, {r['upper']:.3f}]", (evaluation, row, phase, cell)
                checked += 1
    assert checked == 8
