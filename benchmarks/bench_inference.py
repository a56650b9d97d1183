"""Inference time of every deployment of the pruned network against the fastest dense one.

    python benchmarks/bench_inference.py            # after ./run_experiments.sh
    python benchmarks/bench_inference.py --batches 4 8 16 32 64 --variants sparse-coo \
        sparse-csr --name crossover             # where COO stops beating CSR

Times batches of MNIST test images (several repetitions after a warm-up: median, min, max per
call), all in one process, prints a table and writes benchmarks/results/inference-<cpu|gpu>.json
with the machine's facts. The variants:
  dense                  TensorFlow, the pruned weights as dense matrices (tf.function)
  sparse-<kernel>        TensorFlow, deploy/sparse_graph.py with one sparse kernel, the dead
                         units left out as the deploy stage stores the network
  savedmodel             the deployed SavedModel (<sparse-dir>/saved_model)
  tflite-dense[-builtin] the same network converted to .tflite with dense weights, in LiteRT
                         with its default XNNPACK delegate (or TFLite's built-in kernels only)
  tflite[-builtin]       the deployed <sparse-dir>/model.tflite (sparse weights) in LiteRT;
  tflite-tf              ... in TensorFlow's bundled (deprecated) tf.lite.Interpreter
  tflite-int8, tflite-dense-int8   model_int8.tflite, and the dense network quantized alike,
                         given int8 pixels (quantized before the timing, deploy.litert.convert)
The dense baselines (dense, tflite-dense, tflite-dense-builtin; tflite-dense-int8 for int8) are
always timed: "vs dense" is the speed-up over the fastest of them at each batch size. "ideal" is
that time x density, the time if skipping the zeros were free; GFLOP/s counts the useful work,
2 x non-zero weights x images, so the distance to the machine's limit shows.
"""
import sys  # noqa: I001  run by its path (python benchmarks/<name>.py) as by -m: the repo's
from pathlib import Path  # modules are one folder up
if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import argparse
import re

import numpy as np
import tensorflow as tf

import configs
from benchmarks.timing import (RESULTS_DIR, check_batches, machine_facts, results_file,
                               time_calls)
from datasets.images import load as load_data
from deploy.dead_units import drop_dead_units
from deploy.litert import TFLiteNetwork, convert
from deploy.sparse_graph import KERNELS, SparseNetwork, sparse_layers
from training.checkpoints import load_pruned
from training.evaluate import logits_function
from utils import cli
from utils.files import published, write_json
from utils.records import read_artifact

# Running the COO and gather kernels at large batches (large temporary buffers) slows everything
# timed after them in the same process, measured 10-33% at batch 1000; so they are timed last.
TIMED_LAST = ("sparse-coo", "sparse-gather")
DENSE = {"float32": ("dense", "tflite-dense", "tflite-dense-builtin"),
         "int8": ("tflite-dense-int8",)}  # the baselines, always timed
VARIANTS = ["dense", *(f"sparse-{k}" for k in KERNELS), "savedmodel", "tflite-dense",
            "tflite-dense-builtin", "tflite", "tflite-builtin", "tflite-tf", "tflite-dense-int8",
            "tflite-int8"]


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
                   help="which to time (default: all); the dense baselines are always timed")
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
    chosen = {*args.variants, *DENSE["float32"]} if args.variants else set(VARIANTS)
    if any("int8" in v for v in chosen):
        chosen |= set(DENSE["int8"])
    written = (args.results_dir, [results_file(args.name)])
    with published({"--results-dir": written}, args.name) as out:  # one benchmark at a time
        write_json(out / results_file(args.name), run_benchmark(args, chosen))
    print(f"wrote {args.results_dir / results_file(args.name)}")


def load_variants(args, chosen):
    """{name: pixels -> logits} of the `chosen` variants, and the pruned network's non-zero
    weights and density. The sparse kernels run it as the deploy stage stores it, without its
    dead units (`deploy.dead_units`); the density counts those weights against every position
    of the network the dense baselines run."""
    model, *_ = load_pruned(args.pruned_dir)
    full = sparse_layers(model)
    layers = drop_dead_units(full)
    nonzeros = sum(len(l["values"]) for l in layers)
    density = nonzeros / sum(int(np.prod(l["shape"])) for l in full)
    variants = {"dense": logits_function(model),
                **{f"sparse-{k}": SparseNetwork(layers, kernel=k) for k in KERNELS
                   if f"sparse-{k}" in chosen}}
    if "savedmodel" in chosen:
        serving = read_artifact(args.sparse_dir / "saved_model", lambda p: tf.saved_model.load(
            str(p)).signatures["serving_default"], made_by="deploy_pruned_model.py")
        variants["savedmodel"] = lambda x: serving(pixels=x)["output_0"]

    def deployed(name):
        return read_artifact(args.sparse_dir / name, lambda p: p.read_bytes(),
                             made_by="deploy_pruned_model.py")

    def calibration():  # as the deploy stage calibrates its int8 model by default
        x_train = load_data(data_dir=args.data_dir)["train"][0]
        return x_train[:configs.SparseConfig.calibration_images]

    tflite = {  # name: (what to convert or read, interpreter options)
        "tflite-dense": (lambda: convert(model, sparse=False), {}),
        "tflite-dense-builtin": (lambda: convert(model, sparse=False), dict(xnnpack=False)),
        "tflite": (lambda: deployed("model.tflite"), {}),
        "tflite-builtin": (lambda: deployed("model.tflite"), dict(xnnpack=False)),
        "tflite-tf": (lambda: deployed("model.tflite"), dict(xnnpack=False, runtime="tensorflow")),
        "tflite-dense-int8": (lambda: convert(model, sparse=False, representative=calibration()),
                              {}),
        "tflite-int8": (lambda: deployed("model_int8.tflite"), {})}
    for name, (content, options) in tflite.items():
        if name in chosen:
            variants[name] = TFLiteNetwork(content(), **options)
    return variants, nonzeros, density


def run_benchmark(args, chosen):
    """Time the `chosen` variants at every batch size; print the table, return the results."""
    x_test, y_test = load_data(data_dir=args.data_dir)["test"]
    check_batches(args.batches, x_test.shape[1])
    variants, nonzeros, density = load_variants(args, chosen)

    results = dict(machine=machine_facts(), density=density, nonzero_weights=nonzeros,
                   baselines=DENSE, timings={}, accuracy={})
    for name, fn in variants.items():
        logits = np.asarray(fn(tf.constant(x_test)))
        results["accuracy"][name] = float(np.mean(logits.argmax(1) == y_test))
    print(f"density {density:.2%}; {results['machine']['cpu']}, {results['machine']['cores']} "
          f"cores, TF {tf.__version__} on {results['machine']['device']}")
    print(f"{'batch':>6s} {'variant':20s} {'median ms':>10s} {'min-max ms':>16s} "
          f"{'vs dense':>9s} {'vs ideal':>9s} {'GFLOP/s':>8s}")
    for last in (False, True):
        for batch in args.batches:
            x = np.resize(x_test, (batch, x_test.shape[1]))
            calls = {name: (lambda fn=fn, x=getattr(fn, "quantize", tf.constant)(x):
                            np.asarray(fn(x))) for name, fn in variants.items()
                     if (name in TIMED_LAST) == last}
            results["timings"].setdefault(str(batch), {}).update(time_calls(calls, args.repeats))
    for batch, timings in results["timings"].items():
        fastest = {kind: min((timings[n]["median_s"], n) for n in names if n in timings)
                   for kind, names in DENSE.items() if any(n in timings for n in names)}
        for name, t in timings.items():
            seconds, baseline = fastest["int8" if "int8" in name else "float32"]
            t.update(baseline=baseline, speedup_vs_dense=seconds / t["median_s"],
                     ratio_to_ideal=t["median_s"] / (seconds * density),
                     useful_gflops=2 * nonzeros * int(batch) / t["median_s"] / 1e9)
            print(f"{batch:>6s} {name:20s} {t['median_s'] * 1e3:10.3f} "
                  f"{t['min_s'] * 1e3:7.3f}-{t['max_s'] * 1e3:<8.3f} "
                  f"{t['speedup_vs_dense']:8.2f}x {t['ratio_to_ideal']:8.1f}x "
                  f"{t['useful_gflops']:8.1f}")
    print(f"accuracy: {results['accuracy']}")
    return results


if __name__ == "__main__":
    cli.run(main)
