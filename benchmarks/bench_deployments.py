"""Which deployment to ship: every deployment of one network, its accuracy, size and speed.

    python benchmarks/bench_deployments.py --network mlp --deployed saved_models/network_sparse \
        saved_models/mlp-1x4/network_sparse saved_models/mlp-inputs/network_sparse

Takes the network's dense checkpoint (train_network_dense.py) and any number of deploy-stage
folders (deploy_pruned_model.py: unstructured, --block 1x4, --structure ...). Every deployment:
  dense .tflite         the dense network in LiteRT with XNNPACK
  dense int8 .tflite    the same, int8 (calibrated as the deploy stage calibrates; int8 pixels
                        in, deploy.litert.convert): the fastest dense file, the baseline of
                        every speed-up
  dense TF              the dense Keras model as a tf.function
and, timed beside them but neither scored nor chosen, the floor: an int8 .tflite that reads the
same int8 pixels and does the least a classifier can (one fully-connected layer to the logits,
untrained): how far any int8 deployment of this input could go ("floor" in the JSON).
and of each deploy folder, named after its pruning ("unstructured", "1x4 blocks", "shrunk
266-88-33" for a structured one, whose network is the smaller dense one, "shrunk 266-88-33 + 1x4
blocks" for one pruned further inside it, prune_network.py --structured-dir):
  <name> .tflite, <name> int8 .tflite   its model.tflite / model_int8.tflite in LiteRT
  <name> SavedModel                     its saved_model (the sparse TensorFlow graph)
Each is scored on the validation and the test split, its bytes on disk counted, and timed at
every batch size (--batches) in this one process, round-robin (benchmarks/timing.py), each
call given the pixels in its file's input type (int8 ones quantized beforehand, as the float ones
were scaled to [0, 1] beforehand; a deploy folder written before 7 December has a float32-input
int8 file, which gets float32 pixels and quantizes them inside). A speed-up
is the dense int8 .tflite's time over the deployment's at the same batch, per repetition (the
two ran side by side): its median, and its range over the --repeats; `speedup_vs_float` is the
same against the dense float32 .tflite. Each deploy folder's storage formats
(weights.<format>.npz: coo16 ... shared-5bit-huffman) are listed too, with the bytes and
accuracies the deploy stage measured: stored weights, not a runtime, so not timed.
Multiply-adds count the useful work: the non-zero weights times the positions each is
applied at (a conv's output pixels).

"chosen" answers the question per goal, on the validation split only: among the deployments
whose validation accuracy reaches the goal's (experiments/papers.py `DEPLOY_GOAL`: the dense
model's for the MLP, the papers' error for the LeNets), the fastest at each batch size, the
smallest that runs and the smallest stored; their test accuracy is then reported. Writes
benchmarks/results/deployments-<network>-<device>.json and the Pareto plots
pics/deployments[-<network>].png (test accuracy against latency at batch 1 and 1000, and against
bytes).
"""
import sys  # noqa: I001  run by its path (python benchmarks/<name>.py) as by -m: the repo's
from pathlib import Path  # modules are one folder up
if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import json

import configs
from experiments import papers
from utils import cli

PLOT = "deployments.png"
BASELINE, FLOAT_BASELINE = "dense int8 .tflite", "dense .tflite"  # the speed-ups' denominators
FLOOR = "floor"  # timed beside the deployments, not one of them (see the docstring)


def parse():
    p = cli.Parser(__doc__)
    p.add_argument("--network", default="mlp", choices=list(configs.NETWORKS))
    p.add_argument("--dense-dir", type=cli.path,
                   help="the dense checkpoint (default: the network's, under saved_models/)")
    p.add_argument("--deployed", type=cli.path, nargs="+", required=True, metavar="DIR",
                   help="deploy-stage folders to compare")
    p.add_argument("--batches", type=cli.positive_int, nargs="+", default=[1, 100, 1000, 10000])
    p.add_argument("--repeats", type=cli.positive_int, default=7)
    cli.data_flags(p)
    p.add_argument("--results-dir", type=cli.path, default=None,
                   help="default: the repo's benchmarks/results/")
    p.add_argument("--pics-dir", type=cli.path, default=None,
                   help="where the Pareto plot goes (default: the repo's pics/, pics/<network>/ "
                        "for the LeNets)")
    args = p.parse_args()
    if len(set(args.deployed)) != len(args.deployed):
        p.error("--deployed: a folder is given twice")
    for folder in args.deployed:
        if not (folder / "config.json").is_file():
            p.error(f"--deployed {folder}: no output of deploy_pruned_model.py there; run it "
                    f"first (--model-dir)")
    args.dense_dir = args.dense_dir or configs.repo_path(
        configs.dense_config(args.network).model_dir)
    check_inputs(args)
    return args


def check_inputs(args):
    """Refuse, before anything is timed, what would be scored as something it is not: a folder
    of another stage or network, one trained on other data than the benchmark scores on (MNIST,
    or --dataset) or than the dense checkpoint, and --quick runs written over the committed
    results."""
    from utils.records import read_record, record_facts
    records = {args.dense_dir: read_record(args.dense_dir, "train_network_dense.py")[1]}
    records.update({f: read_record(f, "deploy_pruned_model.py")[1] for f in args.deployed})
    facts = {folder: record_facts(record) for folder, record in records.items()}
    for folder, fact in facts.items():
        network, source = fact["network"], fact["data_source"]
        if network != args.network:
            raise ValueError(f"{folder}/ holds a {network} run, not {args.network}: pass "
                             f"--network {network} or folders of {args.network} runs")
        scored = str(args.dataset) if args.dataset else "MNIST"
        if source != scored:
            raise ValueError(f"{folder}/ was trained on {source}, and this benchmark scores on "
                             f"{scored}: its accuracy would mean nothing; pass the data it was "
                             f"trained on (--dataset, or none for MNIST)")
    if len({fact["data_sha256"] for fact in facts.values()}) > 1:
        raise ValueError("the dense checkpoint and the deployments were trained on different "
                         "data files (their data fingerprints differ)")
    args.data_sha256 = next(iter(facts.values()))["data_sha256"]
    quick = sorted(str(f) for f, fact in facts.items() if fact["quick"])
    committed = [flag for flag, given in (("--results-dir", args.results_dir),
                                          ("--pics-dir", args.pics_dir))
                 if given is None or configs.committed_folder(given)]
    if quick and committed:
        raise ValueError(f"{quick[0]}/ is a --quick run: a smoke benchmark never replaces the "
                         f"committed results; give {' and '.join(committed)} (another folder)")


def floor_network(inputs, classes, calibration):
    """The floor's int8 .tflite: int8 pixels, one product to the logits, dequantized: what no
    int8 file reading these pixels skips. Its weights do not change its time (untrained)."""
    import keras

    from deploy.litert import TFLiteNetwork, convert
    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(classes)])
    return TFLiteNetwork(convert(model, sparse=False, representative=calibration))


def label(meta):
    """A deployment's name from its deploy folder's config.json."""
    pruned, results = meta.get("pruned") or {}, meta["results"]
    block = tuple(pruned.get("block", (1, 1)))
    sparse = "unstructured" if block == (1, 1) else f"{block[0]}x{block[1]} blocks"
    if not results.get("shrunk_sizes"):
        return sparse
    shrunk = f"shrunk {results['shrunk_sizes']['shrunk']}"
    return f"{shrunk} + {sparse}" if pruned.get("shrunk_from") else shrunk


def main():
    args = parse()
    from benchmarks.timing import RESULTS_DIR, results_file
    results_dir = args.results_dir or RESULTS_DIR
    pics = args.pics_dir or configs.repo_path(configs.network_folder("pics", args.network))
    from utils.files import published
    stem = f"deployments-{args.network}"
    outputs = {"--results-dir": (results_dir, [results_file(stem)]), "--pics-dir": (pics, [PLOT])}
    with published(outputs, stem) as out:  # one benchmark at a time
        run(args, out / results_file(stem), out / PLOT)
    print(f"wrote {results_dir / results_file(stem)} and {pics / PLOT}")


def run(args, results_path, plot_path):
    """Score, measure and time every deployment; print, write the JSON and the plot."""
    import numpy as np  # TensorFlow starts here, once the flags are checked (utils/cli.py)
    import tensorflow as tf

    from benchmarks.timing import check_batches, machine_facts, time_calls
    from datasets.images import load as load_data
    from deploy.litert import TFLiteNetwork, convert
    from deploy.saved_model import directory_bytes, saved_model_bytes
    from networks.builders import multiply_adds, positions
    from training.checkpoints import CUSTOM_OBJECTS, load_checkpoint
    from training.evaluate import logits_function
    from utils.files import write_json
    from utils.plot_utils import plot_deployments
    from utils.records import read_artifact

    model, _ = load_checkpoint(args.dense_dir, "train_network_dense.py", CUSTOM_OBJECTS)
    data = load_data(args.dataset, args.data_dir)
    check_batches(args.batches, data["test"][0].shape[1])
    if data["sha256"] != args.data_sha256:
        raise ValueError(f"{data['source']} is not the data the checkpoints were trained on "
                         f"(sha256 {data['sha256'][:12]}..., theirs {args.data_sha256[:12]}...)")
    at, dense_macs = positions(model), multiply_adds(model)
    calibration = data["train"][0][:configs.SparseConfig.calibration_images]
    deployments = {  # name: (pixels -> logits, bytes, multiply-adds, kind)
        "dense .tflite": (TFLiteNetwork(convert(model, sparse=False)), None, dense_macs, "dense"),
        "dense int8 .tflite": (TFLiteNetwork(convert(model, sparse=False,
                                                      representative=calibration)),
                               None, dense_macs, "dense"),
        "dense TF": (logits_function(model), saved_model_bytes(model), dense_macs, "dense")}
    sizes = {"dense .tflite": len(deployments["dense .tflite"][0].content),
             "dense int8 .tflite": len(deployments["dense int8 .tflite"][0].content)}
    folders, stored = {}, {}
    for folder in args.deployed:
        meta = read_artifact(folder / "config.json", lambda p: json.loads(p.read_text()),
                             "deploy_pruned_model.py")
        if meta.get("config", {}).get("model_dir") is None or "tflite" not in meta["results"]:
            raise ValueError(f"--deployed {folder}: not a deploy_pruned_model.py folder")
        kind = label(meta)
        if kind in folders:
            raise ValueError(f"--deployed {folder} and {folders[kind]} are both {kind}: give one")
        folders[kind] = str(folder)
        macs = sum(n * at[layer] for layer, n in meta["results"]["nonzeros"].items())
        for suffix, file in ((" .tflite", "model.tflite"), (" int8 .tflite", "model_int8.tflite")):
            content = read_artifact(folder / file, lambda p: p.read_bytes(),
                                    "deploy_pruned_model.py")
            deployments[kind + suffix] = (TFLiteNetwork(content), len(content), macs, kind)
        serving = read_artifact(folder / "saved_model", lambda p: tf.saved_model.load(
            str(p)).signatures["serving_default"], "deploy_pruned_model.py")
        deployments[kind + " SavedModel"] = (lambda x, s=serving: s(pixels=x)["output_0"],
                                             directory_bytes(folder / "saved_model"), macs, kind)
        for fmt, r in meta["results"]["formats"].items():  # stored, not run: bytes only
            stored[f"{kind} {fmt}"] = dict(
                kind=kind, bytes=r["bytes"], file_bytes=r["file_bytes"], multiply_adds=macs,
                validation_accuracy=r.get("validation_accuracy"), test_accuracy=r["test_accuracy"])
    floor = floor_network(data["test"][0].shape[1], model.output_shape[-1], calibration)
    rows, floor_row = {}, dict(latency_s={}, speedup={}, speedup_range={})
    for name, (fn, nbytes, macs, kind) in deployments.items():
        accuracy = {}
        for split in ("validation", "test"):
            x, y = data[split]
            logits = np.concatenate([np.asarray(fn(x[i:i + 1000]))
                                     for i in range(0, len(x), 1000)])
            accuracy[split] = float(np.mean(logits.argmax(1) == y))
        rows[name] = dict(kind=kind, input=np.dtype(getattr(fn, "dtype", np.float32)).name,
                          bytes=nbytes or sizes[name], multiply_adds=macs,
                          validation_accuracy=accuracy["validation"],
                          test_accuracy=accuracy["test"], latency_s={}, speedup={},
                          speedup_range={}, speedup_vs_float={}, useful_gflops={})
    x_test = data["test"][0]
    for batch in args.batches:
        x = np.resize(x_test, (batch, x_test.shape[1]))
        calls = {name: (lambda fn=fn, x=getattr(fn, "quantize", tf.constant)(x):  # its type
                        np.asarray(fn(x))) for name, (fn, *_) in deployments.items()}
        timings = time_calls({**calls, FLOOR: lambda x=floor.quantize(x): floor(x)}, args.repeats)
        for name, t in timings.items():
            row, b = rows.get(name, floor_row), str(batch)
            ratios = {base: [u / v for u, v in zip(timings[base]["times_s"], t["times_s"])]
                      for base in (BASELINE, FLOAT_BASELINE)}
            row["latency_s"][b] = t
            row["speedup"][b] = float(np.median(ratios[BASELINE]))
            row["speedup_range"][b] = [min(ratios[BASELINE]), max(ratios[BASELINE])]
            if row is floor_row:
                continue
            row["speedup_vs_float"][b] = float(np.median(ratios[FLOAT_BASELINE]))
            row["useful_gflops"][b] = 2 * row["multiply_adds"] * batch / t["median_s"] / 1e9
    chosen = choose(rows, stored, args.network, args.batches)
    results = dict(machine=machine_facts(), network=args.network, baseline=BASELINE,
                   float_baseline=FLOAT_BASELINE,
                   batches=args.batches, deployments=rows, floor=floor_row, stored=stored,
                   chosen=chosen, folders=folders)
    print_table(rows, stored, chosen, args.batches)
    print(f"  the floor (int8 pixels, one product, dequantize): "
          + " / ".join(f"{floor_row['speedup'][str(b)]:.2f}x" for b in args.batches)
          + f" the {BASELINE} at batch " + " / ".join(map(str, args.batches)))
    write_json(results_path, results)
    plot_deployments(rows, stored, chosen, args.network, plot_path)


def choose(rows, stored, network, batches):
    """Per goal, on the validation split: the fastest deployment at each batch, the smallest
    file that runs, and the smallest stored weights (a storage format's bytes), among those whose
    validation accuracy reaches the goal's."""
    goal = papers.DEPLOY_GOAL.get(network)
    floor = rows["dense TF"]["validation_accuracy"] if goal is None else 1 - goal / 100
    dense_bytes = rows["dense .tflite"]["bytes"]

    def able(table):
        return {n: r for n, r in table.items() if (r["validation_accuracy"] or 0) >= floor}

    def smallest(table):
        if not table:
            return None
        name = min(table, key=lambda n: table[n]["bytes"])
        return dict(name=name, bytes=table[name]["bytes"],
                    compression=dense_bytes / table[name]["bytes"],
                    test_accuracy=table[name]["test_accuracy"])

    runs = able(rows)
    fastest = {str(b): dict(name=n, speedup=runs[n]["speedup"][str(b)],
                            speedup_range=runs[n]["speedup_range"][str(b)],
                            speedup_vs_float=runs[n]["speedup_vs_float"][str(b)],
                            test_accuracy=runs[n]["test_accuracy"])
               for b in batches for n in [max(runs, key=lambda n: runs[n]["speedup"][str(b)])]} \
        if runs else {}
    return dict(goal=dict(validation_accuracy_at_least=floor,
                          rule="dense model's validation accuracy" if goal is None else
                          f"test error goal {goal}%"),
                fastest=fastest, smallest=smallest(runs), smallest_stored=smallest(able(stored)))


def print_table(rows, stored, chosen, batches):
    print(f"{'deployment':36s} {'val acc':>8s} {'test acc':>8s} {'bytes':>10s} {'MACs':>9s} "
          + " ".join(f"{'x@' + str(b):>8s}" for b in batches))
    for name, r in {**rows, **stored}.items():
        val = f"{r['validation_accuracy']:8.4f}" if r["validation_accuracy"] else f"{'-':>8s}"
        print(f"{name:36s} {val} {r['test_accuracy']:8.4f} {r['bytes']:10,d} "
              f"{r['multiply_adds']:9,d} "
              + " ".join(f"{r['speedup'][str(b)]:7.2f}x" for b in batches if "speedup" in r))
    print(f"x@B: speed-up over the {BASELINE} at batch B (median of the paired repeats)")
    print(f"goal: validation accuracy >= {chosen['goal']['validation_accuracy_at_least']:.4f} "
          f"({chosen['goal']['rule']})")
    for batch, c in chosen["fastest"].items():
        low, high = c["speedup_range"]
        print(f"  fastest at batch {batch}: {c['name']} ({c['speedup']:.2f}x the {BASELINE}, "
              f"{low:.2f}-{high:.2f}x over the repeats; {c['speedup_vs_float']:.2f}x the "
              f"{FLOAT_BASELINE}; test accuracy {c['test_accuracy']:.4f})")
    for what in ("smallest", "smallest_stored"):
        c = chosen[what]
        if c:
            print(f"  {what.replace('_', ' ')}: {c['name']} ({c['bytes']:,d} bytes, "
                  f"{c['compression']:.1f}x smaller than the dense .tflite, test accuracy "
                  f"{c['test_accuracy']:.4f})")


if __name__ == "__main__":
    cli.run(main)
