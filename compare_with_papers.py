"""Our pruning next to the papers': each stage over several seeds, mean +- std, as a table.

    python compare_with_papers.py --network lenet-5              # seeds 123 124 125 (~40 min)
    python compare_with_papers.py --network lenet-300-100 --seeds 123 124

For every seed, runs train_network_dense.py -> prune_network.py -> deploy_pruned_model.py with the
network's recipe (configs.NETWORKS) into <runs-dir>/<seed>/{dense,pruned,sparse}; a stage whose
output is already there is read, not rerun (delete its folder to rerun it). Then reports, per
seed and as mean +- sample std: the test error of the dense, the pruned and the stored network
(shared-5bit-huffman, after trained quantization), the parameter reduction (weights / non-zeros,
Han et al. 2015's measure) and the compression (dense float32 bytes / stored bytes, Deep
Compression's), beside the published rows (configs.NETWORKS). Writes
results/<network>/papers_comparison.md at the end.
"""
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import configs
from utils import cli
from utils.atomic import check_publishable, publish
from utils.checkpoints import lock

TABLE = "papers_comparison.md"  # into --results-dir
STAGES = (("train_network_dense.py", "dense", []),
          ("prune_network.py", "pruned", ["--dense-dir", "dense"]),
          ("deploy_pruned_model.py", "sparse", ["--pruned-dir", "pruned"]))


def run_seed(network, seed, folder, flags):
    """The three stages for one seed, each into its subfolder of `folder` (a stage already done
    is skipped); {stage folder: the results in its config.json}."""
    for script, out, inputs in STAGES:
        if (folder / out / "config.json").is_file():
            continue
        print(f"seed {seed}: {script}", flush=True)
        args = [a if a.startswith("--") else str(folder / a) for a in inputs]
        extra = ["--pics-dir", str(folder / "pics")] if out == "pruned" else []
        code = subprocess.run([sys.executable, str(configs.repo_path(script)), "--network",
                               network, "--seed", str(seed), *flags, *args, *extra,
                               "--model-dir", str(folder / out)]).returncode
        if code:
            raise ValueError(f"seed {seed}: {script} failed (exit status {code}; its error is "
                             f"above); the stages before it are kept and not rerun")
    return {out: json.loads((folder / out / "config.json").read_text())["results"]
            for _, out, _ in STAGES}


def seed_row(seed, results):
    dense, pruned, sparse = results["dense"], results["pruned"], results["sparse"]
    stored = sparse["formats"][configs.BEST_FORMAT]
    weights = sum(sparse["weights"].values())
    return dict(seed=seed, dense_error=100 * (1 - dense["test_accuracy"]),
                pruned_error=100 * (1 - pruned["test_accuracy"]),
                stored_error=100 * (1 - stored["test_accuracy"]),
                param_reduction=weights / pruned["nonzero_weights"],
                compression=stored["compression"], stored_bytes=stored["bytes"],
                fine_tune_seconds=pruned["fine_tune_seconds"])


def table(network, rows):
    """Markdown: one line per seed, the mean +- std, and the published rows."""
    def mean_std(key, digits=2):
        values = [r[key] for r in rows]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.{digits}f} +- {std:.{digits}f}"

    lines = [f"| {network} | dense error | pruned error | stored error ({configs.BEST_FORMAT}) | "
             f"params | bytes |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| seed {r['seed']} | {r['dense_error']:.2f}% | {r['pruned_error']:.2f}% | "
                     f"{r['stored_error']:.2f}% | {r['param_reduction']:.1f}x | "
                     f"{r['compression']:.1f}x |")
    lines.append(f"| **mean +- std** | {mean_std('dense_error')}% | {mean_std('pruned_error')}% | "
                 f"**{mean_std('stored_error')}%** | {mean_std('param_reduction', 1)}x | "
                 f"**{mean_std('compression', 1)}x** |")
    for name, error, measure, reduction in configs.NETWORKS[network]["published"]:
        cells = [f"{error}%", f"{reduction}x", ""] if measure == "params" else \
            [f"{error}%", "", f"{reduction}x"]
        lines.append(f"| {name} | | | {' | '.join(cells)} |")
    return lines


def main():
    p = cli.Parser(__doc__)
    p.add_argument("--network", choices=list(configs.NETWORKS), required=True)
    p.add_argument("--seeds", type=cli.seed, nargs="+", default=[123, 124, 125])
    p.add_argument("--runs-dir", type=cli.path,
                   help="where the seeds' checkpoints go (default saved_models/<network>/seeds)")
    p.add_argument("--results-dir", type=cli.path,
                   help="where the table goes (default results/<network>/)")
    p.add_argument("--data-dir", type=cli.path, help="folder with MNIST (see the stages' --help)")
    args = p.parse_args()
    runs = args.runs_dir or configs.repo_path(f"saved_models/{args.network}/seeds")
    results = args.results_dir or configs.repo_path(configs.network_folder("results",
                                                                          args.network))
    flags = ["--data-dir", str(args.data_dir)] if args.data_dir else []

    check_publishable([TABLE], results, "--results-dir")
    with lock(results / "papers_comparison", "--results-dir"):
        rows = [seed_row(seed, run_seed(args.network, seed, runs / str(seed), flags))
                for seed in args.seeds]
        lines = table(args.network, rows)
        if configs.NETWORKS[args.network]["target"]:
            error, compression = configs.NETWORKS[args.network]["target"]
            lines.append(f"\nTarget (Deep Compression's): error <= {error}% at >= {compression}x "
                         f"bytes; measured: mean error "
                         f"{statistics.mean(r['stored_error'] for r in rows):.2f}% at "
                         f"{statistics.mean(r['compression'] for r in rows):.1f}x.")
        with tempfile.TemporaryDirectory() as out:
            (Path(out) / TABLE).write_text("\n".join(lines) + "\n")
            publish([TABLE], out, results, "--results-dir")
    print(*lines, sep="\n")
    print(f"wrote {results}/papers_comparison.md")


if __name__ == "__main__":
    cli.run(main)
