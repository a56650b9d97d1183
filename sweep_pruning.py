"""How far can pruning go? Accuracy vs compression for each schedule, and layer sensitivity.

    python sweep_pruning.py                     # ~7 minutes on the 2-core CPU
    python sweep_pruning.py --sparsities 0.9 0.97 --schedules one-shot gradual --epochs 10
    python sweep_pruning.py --quick             # smoke test, into saved_models/sweep_quick/

Starts every point from the stage-1 checkpoint (run train_network_dense.py first). For each target
sparsity, one-shot, iterative and gradual pruning (global-sparsity criterion) fine-tune for the same
number of epochs at learning rate 1e-2 then 1e-3; the original recipe (|w| < 0.03, one-shot, its
own config) is run once for reference. Writes results/sweep_pruning.csv,
results/layer_sensitivity.csv, pics/accuracy_vs_compression.png and pics/layer_sensitivity.png,
all at the end of a successful run (--quick never writes results/ or pics/).
"""
import contextlib
import csv
import time

import keras

import configs
from networks.network_base import evaluate, logits_function
from networks.network_dense import dense_layers, load_for_fine_tuning
from networks.network_sparse import sparse_layers
from pruning import criteria
from utils import cli, pruning_utils, sparse_formats
from utils.atomic import replacing
from utils.checkpoints import lock
from utils.plot_utils import plot_accuracy_vs_compression, plot_layer_sensitivity
from utils.schedules import SCHEDULES, criterion_value, prune_and_fine_tune

SWEEP_LR = (1e-2, 1e-3)  # fine-tuning at the original's 1e-3 recovers far less at high sparsity
QUICK_DIR = "saved_models/sweep_quick"  # where --quick writes, never the committed results/, pics/
SENSITIVITY_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)


def run_point(args, data, **changes):
    """Prune the stage-1 network with a PrunedConfig changed by `changes`; one result row."""
    config = configs.override(configs.PrunedConfig(), seed=args.seed, **changes)
    keras.utils.set_random_seed(config.seed)
    model, optimizer = load_for_fine_tuning(args.dense_dir, config)
    start = time.perf_counter()
    masks, _ = prune_and_fine_tune(model, optimizer, config, data, log=lambda *_: None)
    seconds = time.perf_counter() - start
    layers = sparse_layers(model)
    accuracy, _ = evaluate(logits_function(model), *data["test"])
    nonzero = sum(int(m.sum()) for m in masks.values())
    coo16 = sparse_formats.nbytes(sparse_formats.encode(layers, "coo16"))
    row = dict(schedule=config.schedule, criterion=config.criterion,
               target=criterion_value(config),
               sparsity=criteria.sparsity(list(masks.values())), nonzeros=nonzero,
               compression=pruning_utils.dense_bytes(layers) / coo16, test_accuracy=accuracy,
               epochs=config.epochs, seconds=seconds)
    print(f"{row['schedule']:10s} target {row['target']:<6} sparsity {row['sparsity']:.2%}  "
          f"{row['compression']:6.2f}x  test accuracy {accuracy:.4f}  ({seconds:.0f} s)")
    return row


def layer_sensitivity(model, data, levels):
    """Test accuracy with one layer at a time pruned to each sparsity level, no fine-tuning."""
    logits_fn, rows = logits_function(model), []
    for layer in dense_layers(model):
        original = layer.kernel.numpy()
        for level in levels:
            (mask,) = criteria.layer_sparsity_masks([original], level)
            layer.kernel.assign(original * mask)
            accuracy, _ = evaluate(logits_fn, *data["test"])
            rows.append(dict(layer=layer.name, sparsity=level, test_accuracy=accuracy))
        layer.kernel.assign(original)
    return rows


def write_csv(path, rows):
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main():
    p = cli.parser(__doc__)
    p.add_argument("--sparsities", type=cli.fraction, nargs="+",
                   default=[0.8, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99],
                   help="target global sparsities, each in [0, 1) (default %(default)s)")
    p.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES),
                   help="schedules to compare (default: all)")
    p.add_argument("--epochs", type=cli.positive_int, default=20,
                   help="fine-tuning epochs per point (default %(default)s)")
    p.add_argument("--dense-dir", type=cli.path,
                   default=configs.repo_path(configs.DenseConfig.model_dir),
                   help="stage-1 checkpoint folder (default %(default)s)")
    p.add_argument("--results-dir", type=cli.path,
                   help="where the CSVs go (default: the repo's results/; --quick: "
                        f"{QUICK_DIR})")
    p.add_argument("--pics-dir", type=cli.path,
                   help=f"where the plots go (default: the repo's pics/; --quick: {QUICK_DIR})")
    args = p.parse_args()
    args.seed = configs.SEED if args.seed is None else args.seed
    if args.quick:
        args.sparsities, args.epochs = args.sparsities[:2], configs.QUICK["epochs"]
    results = cli.publish_dir(args, "--results-dir", "results", configs.repo_path(QUICK_DIR))
    pics = cli.publish_dir(args, "--pics-dir", "pics", configs.repo_path(QUICK_DIR))

    with contextlib.ExitStack() as outputs:  # one sweep at a time writes them; checked writable
        for folder, flag in {results: "--results-dir", pics: "--pics-dir"}.items():  # once each
            outputs.enter_context(lock(folder / "sweep_pruning", flag))
        dense_model, _ = load_for_fine_tuning(args.dense_dir, configs.PrunedConfig())
        data = cli.load_data(args)
        dense_accuracy, _ = evaluate(logits_function(dense_model), *data["test"])
        print(f"dense baseline: test accuracy {dense_accuracy:.4f}")
        sensitivity = layer_sensitivity(
            dense_model, data, SENSITIVITY_LEVELS[::4] if args.quick else SENSITIVITY_LEVELS)

        original = run_point(args, data, epochs=args.epochs if args.quick else None,
                             threshold=configs.QUICK["threshold"] if args.quick else None)
        original["schedule"] = "original"
        rows = [run_point(args, data, criterion="global-sparsity", sparsity=sparsity,
                          schedule=schedule, epochs=args.epochs, lr_values=SWEEP_LR,
                          rounds=min(configs.PrunedConfig.rounds, args.epochs),
                          lr_boundaries=(args.epochs // 2,))
                for sparsity in args.sparsities for schedule in args.schedules]

        write_csv(results / "sweep_pruning.csv",
                  [dict(r, dense_test_accuracy=dense_accuracy) for r in [original] + rows])
        write_csv(results / "layer_sensitivity.csv", sensitivity)
        plot_accuracy_vs_compression(rows, dense_accuracy, original,
                                     pics / "accuracy_vs_compression.png")
        plot_layer_sensitivity(sensitivity, dense_accuracy, pics / "layer_sensitivity.png")
    print(f"wrote {results}/sweep_pruning.csv, {results}/layer_sensitivity.csv and 2 plots in "
          f"{pics}/")


if __name__ == "__main__":
    cli.run(main)
