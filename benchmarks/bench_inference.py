"""Inference time of the dense pruned network against every sparse kernel and the SavedModel.

    python benchmarks/bench_inference.py            # after ./run_experiments.sh
    python benchmarks/bench_inference.py --batches 4 8 16 32 64 --variants dense sparse-coo \
        sparse-csr --name crossover             # where COO stops beating CSR

Times batches of MNIST test images (several repetitions after a warm-up: median, min, max per
call), prints a table and writes benchmarks/results/inference-<cpu|gpu>.json with the machine's
facts. "ideal" is the dense time x density: the time if skipping the zeros were free. The dense
network is always timed: every ratio is against it.
"""
import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import configs  # noqa: E402
from benchmarks.timing import RESULTS_DIR, machine_facts, time_calls, write_results  # noqa: E402
from networks.network_base import logits_function  # noqa: E402
from networks.network_dense import load_pruned  # noqa: E402
from networks.network_sparse import KERNELS, SparseNetwork, sparse_layers  # noqa: E402
from utils import cli  # noqa: E402
from utils.checkpoints import lock, read_artifact  # noqa: E402
from utils.mnist import load_mnist  # noqa: E402

# Running the COO and gather kernels at large batches (large temporary buffers) slows everything
# timed after them in the same process, measured 10-33% at batch 1000; so they are timed last.
TIMED_LAST = ("sparse-coo", "sparse-gather")
VARIANTS = ["dense", *(f"sparse-{k}" for k in KERNELS), "savedmodel"]


def results_name(text):
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", text):
        raise argparse.ArgumentTypeError(f"must be a file-name stem (letters, digits, _.-), "
                                         f"got {text!r}")
    return text


def main():
    p = cli.Parser(__doc__)
    p.add_argument("--batches", type=cli.positive_int, nargs="+", default=[1, 100, 1000, 10000])
    p.add_argument("--repeats", type=cli.positive_int, default=7)
    p.add_argument("--variants", nargs="+", choices=VARIANTS,
                   help="which to time (default: all); dense is always timed, as the baseline")
    p.add_argument("--name", type=results_name, default="inference",
                   help="results file: <results-dir>/<name>-<device>.json (%(default)s)")
    p.add_argument("--results-dir", type=cli.path, default=RESULTS_DIR,
                   help="folder of the results file (default %(default)s)")
    p.add_argument("--pruned-dir", type=cli.path,
                   default=configs.repo_path(configs.PrunedConfig.model_dir))
    p.add_argument("--sparse-dir", type=cli.path,
                   default=configs.repo_path(configs.SparseConfig.model_dir))
    p.add_argument("--data-dir", type=cli.path)
    args = p.parse_args()
    chosen = {"dense", *(args.variants or VARIANTS)}
    with lock(args.results_dir / args.name, "--results-dir"):  # writable; one benchmark at a time
        run_benchmark(args, chosen)


def run_benchmark(args, chosen):
    """Time the `chosen` variants at every batch size; print the table, write the JSON."""
    model, _, _ = load_pruned(args.pruned_dir)
    layers = sparse_layers(model)
    density = sum(len(l["values"]) for l in layers) / sum(int(np.prod(l["shape"])) for l in layers)
    variants = {"dense": logits_function(model),
                **{f"sparse-{k}": SparseNetwork(layers, kernel=k) for k in KERNELS}}
    if "savedmodel" in chosen:
        serving = read_artifact(args.sparse_dir / "saved_model", lambda p: tf.saved_model.load(
            str(p)).signatures["serving_default"], made_by="deploy_pruned_model.py")
        variants["savedmodel"] = lambda x: serving(pixels=x)["output_0"]
    variants = {k: v for k, v in variants.items() if k in chosen}
    x_test, y_test = load_mnist(args.data_dir)["test"]

    results = dict(machine=machine_facts(), density=density, timings={}, accuracy={})
    for name, fn in variants.items():
        logits = fn(tf.constant(x_test)).numpy()
        results["accuracy"][name] = float(np.mean(logits.argmax(1) == y_test))
    print(f"density {density:.2%}; {results['machine']['cpu']}, {results['machine']['cores']} "
          f"cores, TF {tf.__version__} on {results['machine']['device']}")
    print(f"{'batch':>6s} {'variant':14s} {'median ms':>10s} {'min-max ms':>16s} "
          f"{'vs dense':>9s} {'vs ideal':>9s}")
    for last in (False, True):
        for batch in args.batches:
            x = tf.constant(np.resize(x_test, (batch, x_test.shape[1])))
            calls = {name: (lambda fn=fn: fn(x).numpy()) for name, fn in variants.items()
                     if (name in TIMED_LAST) == last}
            results["timings"].setdefault(str(batch), {}).update(time_calls(calls, args.repeats))
    for batch, timings in results["timings"].items():
        dense = timings["dense"]["median_s"]
        for name, t in timings.items():
            t["speedup_vs_dense"] = dense / t["median_s"]
            t["ratio_to_ideal"] = t["median_s"] / (dense * density)
            print(f"{batch:>6s} {name:14s} {t['median_s'] * 1e3:10.3f} "
                  f"{t['min_s'] * 1e3:7.3f}-{t['max_s'] * 1e3:<8.3f} "
                  f"{t['speedup_vs_dense']:8.2f}x {t['ratio_to_ideal']:8.1f}x")
    print(f"accuracy: {results['accuracy']}")
    print(f"wrote {write_results(args.name, results, args.results_dir)}")


if __name__ == "__main__":
    cli.run(main)
