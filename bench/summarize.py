"""Markdown tables from a ``bench/bench.py`` JSON (what docs/benchmarks.md shows).

    python bench/summarize.py bench/results/results.json [--before before.json]
"""

from __future__ import annotations

import argparse
import json


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def machine_table(report: dict) -> str:
    m = report["machine"]
    rows = [
        ("date (UTC)", m["date"]),
        ("CPU", f"{m['cpu']}, {m['logical_cpus']} logical CPUs, {m['memory_gib']} GiB"),
        ("bf16 / matrix flags", f"{', '.join(m['bf16_cpu_flags'])}; AMX: {'yes' if m['amx'] else 'no'}"),
        ("software", f"torch {m['torch']}, transformers {m.get('transformers', '?')}, Python {m['python']}"),
        ("torch threads", m["torch_threads"]),
        ("load average (start / end)", f"{m['loadavg_at_start']} / {m.get('loadavg_at_end', '?')}"),
        ("command", f"`{report['command']}`"),
        ("bench wall time", f"{report.get('bench_seconds', '?')} s"),
    ]
    return "| | |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def dtype_tables(report: dict) -> str:
    out = []
    dtypes = report["dtypes"]
    out.append("| | " + " | ".join(dtypes) + " |")
    out.append("| --- |" + " --- |" * len(dtypes))

    def row(label, getter, digits=2):
        cells = []
        for d in dtypes.values():
            try:
                cells.append(fmt(getter(d), digits))
            except (KeyError, TypeError):
                cells.append("-")
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    row("matmul GFLOP/s (4096x576 @ 576x1536)", lambda d: d["matmul_gflops"], 0)
    row("statistics pass: tokens/s (median)", lambda d: d["statistics"]["tokens_per_s"], 0)
    row("statistics pass: s/block (median)", lambda d: d["statistics"]["seconds_per_block"], 3)
    row("statistics pass: block calls per batch", lambda d: d["statistics"]["block_calls"]["calls_per_block_per_batch"], 1)
    row("statistics pass: process peak RSS MiB (model load + pass)", lambda d: d["statistics"]["process_max_rss_mib"], 0)
    row("statistics pass: RSS increase during the pass MiB", lambda d: d["statistics"]["memory"]["rss_peak_increase_mib"], 0)
    row("evaluation: `perplexity` tokens/s", lambda d: d["evaluation"]["perplexity_tokens_per_s"], 0)
    row("evaluation: plain `model(ids).logits` tokens/s", lambda d: d["evaluation"]["plain_forward_tokens_per_s"], 0)
    row("evaluation: perplexity time / plain time", lambda d: d["evaluation"]["perplexity_over_plain_time"], 3)
    row("evaluation: RSS increase MiB, `perplexity` (run first)", lambda d: d["evaluation"]["memory"]["owl"]["rss_peak_increase_mib"], 0)
    row("evaluation: process peak RSS MiB (both)", lambda d: d["evaluation"]["process_max_rss_mib"], 0)
    row("dense ppl (same windows)", lambda d: d["evaluation"]["ppl_dense"], 4)
    return "\n".join(out)


def method_table(report: dict) -> str:
    out = ["| dtype | method | run_prune wall s (no eval) | pruning s | s/block | forwards s | observers s | prune_layer s | block calls / batch | process peak RSS MiB | ppl |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for dtype, d in report["dtypes"].items():
        for method, r in d.get("methods", {}).items():
            split = r["pruning_split_s"]
            calls = r["block_calls"].get("calls_per_block_per_batch", 0 if not r["block_calls"].get("calls_total") else "?")
            out.append(
                f"| {dtype} | {method} | {fmt(r['wall_without_eval_s'])} | {fmt(r['pruning_s'])} | {fmt(r['pruning_s_per_block'], 3)} | "
                f"{fmt(split['forwards_without_observers'])} | {fmt(split['observers'])} | "
                f"{fmt(split['prune_layer (scores+masks+solver+assign)'])} | {fmt(calls, 1)} | {r.get('process_max_rss_mib', r['memory']['rss_peak_mib']):.0f} | {fmt(r['ppl'], 3)} |"
            )
    out.append("")
    out.append("| dtype | base method | OWL / uniform: run_prune wall (no eval) | OWL / uniform: pruning pass |")
    out.append("| --- | --- | --- | --- |")
    for dtype, d in report["dtypes"].items():
        for base, ratio in d.get("owl_over_uniform", {}).items():
            out.append(f"| {dtype} | {base} | {fmt(ratio.get('wall_without_eval_s'), 3)} | {fmt(ratio.get('pruning_s'), 3)} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    args = parser.parse_args()
    report = json.loads(open(args.results).read())
    print("## Machine\n")
    print(machine_table(report))
    if "masks" in report:
        m = report["masks"]
        print("\n## Masks on the model's weights (ms per block of 7 layers, median)\n")
        print("| | selection (now) | full stable sort (before) |\n| --- | --- | --- |")
        print(f"| Wanda row mask | {m['row_mask_ms_per_block']} | {m['row_stable_sort_ms_per_block']} |")
        print(f"| magnitude mask | {m['magnitude_mask_ms_per_block']} | {m['magnitude_stable_sort_ms_per_block']} |")
        print(f"\nidentical masks: {m['identical_to_stable_sort']}")
    print("\n## Statistics pass and evaluation\n")
    print(dtype_tables(report))
    print("\n## Methods\n")
    print(method_table(report))
    dtypes = list(report["dtypes"])
    if len(dtypes) > 1:
        base = dtypes[0]
        print(f"\n## Perplexity per dtype (same {report['args']['eval_windows']} windows of {report['args']['seqlen']})\n")
        head = ["method", f"{base}"]
        for d in dtypes[1:]:
            head += [f"pruned and evaluated in {d}", "vs " + base, f"pruned in {base}, evaluated in {d}", "vs " + base]
        print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
        ref = report["dtypes"][base]
        rows = [("dense", ref.get("evaluation", {}).get("ppl_dense"))] + [(m, r.get("ppl")) for m, r in ref.get("methods", {}).items()]
        for method, value in rows:
            cells = [method, fmt(value, 3)]
            for d in dtypes[1:]:
                other = report["dtypes"][d]
                mine = other.get("evaluation", {}).get("ppl_dense") if method == "dense" else other.get("methods", {}).get(method, {}).get("ppl")
                cross = report.get("cross_dtype_eval", {}).get(method, {}).get(d)
                if method == "dense":
                    cross = None
                cells += [fmt(mine, 3), f"{(mine / value - 1) * 100:+.2f}%" if mine and value else "-",
                          fmt(cross, 3), f"{(cross / value - 1) * 100:+.2f}%" if cross and value else "-"]
            print("| " + " | ".join(cells) + " |")
    if "dtype_comparison" in report:
        print("\n## dtype comparison\n")
        print("```json\n" + json.dumps(report["dtype_comparison"], indent=2) + "\n```")


if __name__ == "__main__":
    main()
