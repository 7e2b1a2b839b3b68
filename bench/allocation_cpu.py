"""Whether the allocators' statistics and targets depend on the CPU's kernels.

From the committed dense calibration statistics (SmolLM2-135M seeds 0 and 100, Gemma-3-270M
seeds 0-2), computes DLP's block means, OWL's outlier ratios (M 5), their targets at 70% (DLP
alpha 0.15, OWL lambda 0.08), each layer's per-row pruned count, the Wanda masks of every block
at both targets, and how many input norms torch's float32 sqrt rounds otherwise than IEEE;
once with this CPU's native kernels and once with every library pinned to AVX2, each in its own
process (one thread). The JSON holds digests of each, so runs on two machines
compare by digest. With ``--old_tree`` (a checkout of an older commit, e.g. ``git worktree add
/tmp/old <rev>``) the same children also run that tree's code, and the JSON says how far its
targets are from this tree's.

    .venv/bin/python bench/allocation_cpu.py [--old_tree /tmp/old] --out bench/results/results_allocation_cpu_<cpu>.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

from owl.precision import CPU_KERNEL_SETTINGS

STATISTICS = "results/default/calibration/{model}/c4-n32-len2048-seed{seed}-float32/statistics.pt"
SEEDS = {"smollm2-135m": (0, 100), "gemma3-270m": (0, 1, 2)}
AVX2_PIN = dict(zip(CPU_KERNEL_SETTINGS, ("avx2", "AVX2", "AVX2", "AVX2")))  # torch spells it in lower case


def digest(value) -> str:
    return hashlib.sha256(value if isinstance(value, bytes) else repr(value).encode()).hexdigest()[:16]


def commit(tree: str) -> str:
    return subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def child() -> dict:
    import torch

    from owl.allocation import dlp_sparsities, owl_sparsities
    from owl.masks import row_mask, wanda_scores
    from owl.models import find_decoder_blocks, find_linear_sublayers, load_model
    from owl.pruning_record import weights_digest
    from owl.statistics import CalibrationStatistics

    torch.set_num_threads(1)
    out = {"kernels": torch.backends.cpu.get_cpu_capability()}
    for name, seeds in SEEDS.items():
        model, _ = load_model(name, "float32")
        blocks = [find_linear_sublayers(block) for block in find_decoder_blocks(model)]
        out[name] = {"dense_weights_sha256": weights_digest(model)}
        for seed in seeds:
            stats = CalibrationStatistics.load(STATISTICS.format(model=name, seed=seed))
            means, ratios = stats.score_means(blocks), stats.outlier_ratios(blocks, 5.0)
            targets = {"dlp": dlp_sparsities(means, 0.7, 0.15), "owl": owl_sparsities(ratios, 0.7, 0.08)}
            norms = [rows[n].float() for rows in stats.scaler_rows for n in rows]
            off_roots = sum(int((r.sqrt() != r.double().sqrt().float()).sum()) for r in norms)  # torch's float32 root, not IEEE's
            row = {"dlp_means": digest(means), "owl_ratios": digest(ratios), "targets": targets,
                   "float32_sqrt_not_correctly_rounded": f"{off_roots} of {sum(r.numel() for r in norms)}"}
            for allocator, sparsities in targets.items():
                counts, masks = [], hashlib.sha256()
                for index, layers in enumerate(blocks):
                    for layer_name, layer in layers.items():
                        counts.append(int(layer.weight.shape[1] * sparsities[index]))
                        scores = wanda_scores(layer.weight, stats.scaler_rows[index][layer_name])
                        masks.update(row_mask(scores, sparsities[index]).numpy().tobytes())
                row[f"{allocator}_targets"] = digest(sparsities)
                row[f"{allocator}_row_counts"] = digest(counts)
                row[f"{allocator}_wanda_masks"] = masks.hexdigest()[:16]
            out[name][f"seed{seed}"] = row
        del model
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/results_allocation_cpu.json")
    parser.add_argument("--old_tree", help="a checkout of an older commit whose owl/ the children also run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child()))
        return 0
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_eval_precision import cpuinfo_identity

    from owl.precision import cpu_info

    runs = {}
    trees = [("", None)] + ([("old_", os.path.abspath(args.old_tree))] if args.old_tree else [])
    for prefix, tree in trees:
        for label, pin in (("native", {}), ("avx2_pinned", AVX2_PIN)):
            env = {**os.environ, **pin, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            if tree:  # ahead of the installed (editable) kit
                env["PYTHONPATH"] = tree
            done = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True)
            runs[prefix + label] = json.loads(done.stdout.strip().splitlines()[-1])

    def same(a: str, b: str) -> dict:
        """Per model and seed, which digests of runs ``a`` and ``b`` are equal, and the largest
        relative difference of their targets."""
        verdict = {}
        for name, seeds in SEEDS.items():
            ra, rb = runs[a][name], runs[b][name]
            verdict[name] = {"dense_weights_sha256": ra["dense_weights_sha256"] == rb["dense_weights_sha256"]}
            for seed in seeds:
                sa, sb = ra[f"seed{seed}"], rb[f"seed{seed}"]
                verdict[name][f"seed{seed}"] = {k: sa[k] == sb[k] for k in sa if k not in ("targets", "float32_sqrt_not_correctly_rounded")}
                for allocator in sa["targets"]:
                    pairs = zip(sa["targets"][allocator], sb["targets"][allocator])
                    verdict[name][f"seed{seed}"][f"{allocator}_targets_max_rel_diff"] = max(abs(x - y) / y for x, y in pairs)
        return verdict

    comparisons = {"native_vs_pinned": same("native", "avx2_pinned")}
    if args.old_tree:
        comparisons.update({"old_native_vs_old_pinned": same("old_native", "old_avx2_pinned"),
                            "old_vs_new_native": same("old_native", "native"), "old_vs_new_pinned": same("old_avx2_pinned", "avx2_pinned")})
    info = cpu_info()
    summary = {"date": time.strftime("%Y-%m-%d"), "cpuinfo": cpuinfo_identity(), "cpu": {"model": info.get("model"), "flags": info.get("flags")},
               "avx2_pin": AVX2_PIN, "commit": commit("."), "old_commit": commit(args.old_tree) if args.old_tree else None, "comparisons": comparisons, "runs": runs}
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
