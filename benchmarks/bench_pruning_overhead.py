"""The pruning package's cost inside `model.fit`, on the backend KERAS_BACKEND names.

    python -m benchmarks.bench_pruning_overhead                      # TensorFlow
    KERAS_BACKEND=jax python -m benchmarks.bench_pruning_overhead    # JAX
    KERAS_BACKEND=torch python -m benchmarks.bench_pruning_overhead  # PyTorch

For LeNet-300-100 and LeNet-5, XLA on (TensorFlow, JAX), steps_per_execution 1 and 50 (1 on
PyTorch, where Keras refuses more): epochs of plain `fit` on the unpruned model, with fixed masks
(90% layer sparsity) and under `GradualPruning(frequency=100)`; each epoch timed from its start to
its last batch (a callback), the first epoch (compilation) dropped, the settings run in turn
`--rounds` times in one process. Reports, per setting, the median over rounds of its median epoch
time over the unpruned one's in the same round, with the lowest and highest round; writes
benchmarks/results/pruning-overhead-<backend>-cpu.json.
"""
import sys  # noqa: I001  run by its path (python benchmarks/<name>.py) as by -m: the repo's
from pathlib import Path  # modules are one folder up
if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras
import numpy as np

import configs
import pruning
from benchmarks.timing import RESULTS_DIR, EpochTimer, machine_facts, results_file
from networks.builders import build_network
from utils import cli
from utils.files import published, write_json

SETTINGS = ("unpruned", "fixed masks", "gradual")
TORCH = keras.backend.backend() == "torch"
NETWORKS = ("lenet-300-100", "lenet-5")


def epoch_seconds(network, setting, steps_per_execution, x, y, epochs):
    """Median seconds of an epoch after the first, for one setting."""
    keras.utils.set_random_seed(0)
    model = build_network(configs.dense_config(network))
    callbacks = [EpochTimer()]
    if setting == "fixed masks":
        pruning.prune_low_magnitude(model, "layer-sparsity", 0.9)
    if setting == "gradual":
        callbacks.append(pruning.GradualPruning(pruning.PolynomialDecay(
            final_sparsity=0.9, end_step=10 ** 9, frequency=100), "layer-sparsity"))
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=not TORCH, steps_per_execution=steps_per_execution)
    model.fit(x, y, batch_size=100, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks)
    return float(np.median(callbacks[0].seconds[1:]))


def main():
    parser = cli.Parser(__doc__)
    parser.add_argument("--images", type=cli.positive_int, default=10000,
                        help="images per epoch (default 10000: 100 steps of 100)")
    parser.add_argument("--epochs", type=cli.positive_int, default=4,
                        help="epochs per fit; the first is dropped (default 4)")
    parser.add_argument("--rounds", type=cli.positive_int, default=3,
                        help="times each setting is run, in turn (default 3)")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=NETWORKS,
                        help="which networks (default both)")
    args = parser.parse_args()
    name = results_file(f"pruning-overhead-{keras.backend.backend()}")
    with published({"results": (RESULTS_DIR, [name])}, name) as out:  # checked before the work
        write_json(out / name, dict(machine=machine_facts(), backend=keras.backend.backend(),
                                    images=args.images, epochs=args.epochs, rounds=args.rounds,
                                    results=overheads(args)))
    print(f"wrote {RESULTS_DIR / name}")


def overheads(args):
    """{"<network> spe=<n>": {setting: epoch time and ratio to unpruned}}, printed as measured."""
    rng = np.random.default_rng(0)
    x = rng.random((args.images, 784), np.float32)
    y = rng.integers(0, 10, args.images).astype(np.int32)
    results = {}
    for network in args.networks:
        for spe in (1,) if TORCH else (1, 50):
            seconds = {s: [] for s in SETTINGS}
            for _ in range(args.rounds):
                for setting in SETTINGS:
                    seconds[setting].append(epoch_seconds(network, setting, spe, x, y,
                                                          args.epochs))
            ratios = {s: [t / u for t, u in zip(seconds[s], seconds["unpruned"])]
                      for s in SETTINGS}
            row = {s: dict(epoch_s=float(np.median(seconds[s])),
                           ratio=float(np.median(ratios[s])), ratio_range=[
                               float(min(ratios[s])), float(max(ratios[s]))],
                           epochs_s=seconds[s]) for s in SETTINGS}
            results[f"{network} spe={spe}"] = row
            print(f"{network:14s} steps_per_execution {spe:2d}: " + "  ".join(
                f"{s} {r['ratio']:.2f}x ({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f})"
                for s, r in row.items()))
    return results


if __name__ == "__main__":
    cli.run(main)
