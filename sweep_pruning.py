"""How far can pruning go? Accuracy vs compression for each schedule, and layer sensitivity.

    python sweep_pruning.py                     # the MLP, 3 schedules: ~16 minutes on 2 cores
    python sweep_pruning.py --network lenet-5   # a LeNet: its recipe's schedule, its sparsities
    python sweep_pruning.py --sparsities 0.9 0.97 --schedules one-shot gradual --epochs 10
    python sweep_pruning.py --quick             # smoke test, into saved_models/sweep_quick/

Starts every point from the stage-1 checkpoint (run train_network_dense.py first). For each target
sparsity, the schedules (global-sparsity criterion) fine-tune for the same number of epochs at
learning rate 1e-2 then 1e-3 (configs.SWEEP_LR_VALUES); for the MLP the original recipe (|w| <
0.03, one-shot, its own config) is run once for reference. Each layer's sensitivity is measured
at configs.SENSITIVITY_LEVELS, those of --allocation sensitivity. Each point is scored as pruned
(float32) and as stored in shared-5bit-huffman (k-means weight sharing + Huffman, no trained
quantization), on the validation and the test split; the point to report is chosen on validation
(the most compressed one within the papers' error, printed at the end). Writes
results/sweep_pruning.csv, results/layer_sensitivity.csv, pics/accuracy_vs_compression.png and
pics/layer_sensitivity.png (results/<network>/, pics/<network>/ for the LeNets), all at the end of
a successful run (--quick never writes results/ or pics/).
"""
import csv

import configs
from datasets import images
from experiments import papers
from utils import cli
from utils.files import published, replacing

SWEPT = [s for s in configs.SCHEDULES if s != "variational"]  # those that take a sparsity
QUICK_DIR = "saved_models/sweep_quick"  # where --quick writes, never the committed results/, pics/
RESULTS = ("sweep_pruning.csv", "layer_sensitivity.csv")  # into --results-dir
PLOTS = ("accuracy_vs_compression.png", "layer_sensitivity.png")  # into --pics-dir


def write_csv(path, rows):
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def parse():
    """The flags, checked, with the network's sweep defaults filled in; (args, epochs)."""
    p = cli.parser(__doc__)
    p.add_argument("--sparsities", type=cli.fraction, nargs="+", help="target global "
                   "sparsities, each in [0, 1) (default: the network's, configs.NETWORKS)")
    p.add_argument("--schedules", nargs="+", choices=SWEPT,
                   help="schedules to compare at each sparsity (default: all three for mlp, "
                        "gradual for the LeNets; variational has no target sparsity to sweep: "
                        "prune_network.py --schedule variational, or compare_with_papers.py)")
    p.add_argument("--epochs", type=cli.positive_int,
                   help="fine-tuning epochs per point (default: the network's recipe, 20)")
    cli.folder_flag(p, "--dense-dir", "stage-1 checkpoint folder", configs.DenseConfig.model_dir)
    cli.allow_other_data_flag(p)
    p.add_argument("--results-dir", type=cli.path,
                   help="where the CSVs go (default: the repo's results/, results/<network>/ for "
                        f"the LeNets; --quick: {QUICK_DIR})")
    p.add_argument("--pics-dir", type=cli.path, help="where the plots go (default: the repo's "
                   f"pics/, pics/<network>/ for the LeNets; --quick: {QUICK_DIR})")
    args = p.parse_args()
    args.seed = configs.SEED if args.seed is None else args.seed
    args.dense_dir = args.dense_dir or configs.repo_path(
        configs.dense_config(args.network).model_dir)
    defaults = configs.NETWORKS[args.network]["sweep"]
    args.sparsities = args.sparsities or defaults["sparsities"]
    args.schedules = args.schedules or defaults["schedules"]
    epochs = args.epochs or configs.pruned_config(args.network).epochs
    if args.quick:
        args.sparsities, epochs = args.sparsities[:2], configs.QUICK["epochs"]
    return args, epochs


def main():
    args, epochs = parse()
    quick_dir = configs.repo_path(QUICK_DIR)
    results = cli.publish_dir(args, "--results-dir",
                              configs.network_folder("results", args.network), quick_dir)
    pics = cli.publish_dir(args, "--pics-dir", configs.network_folder("pics", args.network),
                           quick_dir)

    outputs = {"--results-dir": (results, RESULTS), "--pics-dir": (pics, PLOTS)}
    with published(outputs, "sweep_pruning") as out:  # checked, and one sweep at a time
        # TensorFlow starts here, once the flags and outputs are checked (utils/cli.py)
        from experiments.sweep import choose_point, layer_sensitivity, run_point
        from training.checkpoints import check_data, load_for_fine_tuning
        from training.evaluate import evaluate, logits_function
        from utils.plot_utils import plot_accuracy_vs_compression, plot_layer_sensitivity
        dense_model, _, config = load_for_fine_tuning(args.dense_dir,
                                                      configs.pruned_config(args.network))
        data = images.from_flags(args)
        config = check_data(data, config, args.dense_dir, args.allow_other_data)
        dense_accuracy, _ = evaluate(logits_function(dense_model), *data["test"])
        print(f"dense baseline: test accuracy {dense_accuracy:.4f}")
        levels = configs.SENSITIVITY_LEVELS  # those of --allocation sensitivity
        sensitivity = layer_sensitivity(dense_model, data, levels[::4] if args.quick else levels)

        original = None
        if args.network == "mlp":  # the original repo's recipe, for reference
            original = run_point(args.network, args.seed, args.dense_dir, data,
                                 epochs=epochs if args.quick else None,
                                 threshold=configs.QUICK["threshold"] if args.quick else None)
            original["schedule"] = "original"
        rows = [run_point(args.network, args.seed, args.dense_dir, data,
                          criterion="global-sparsity", sparsity=sparsity,
                          schedule=schedule, epochs=epochs, lr_values=configs.SWEEP_LR_VALUES,
                          rounds=min(configs.PrunedConfig.rounds, epochs),
                          lr_boundaries=(epochs // 2,))
                for sparsity in args.sparsities for schedule in args.schedules]

        write_csv(out / "sweep_pruning.csv", [dict(r, dense_test_accuracy=dense_accuracy)
                                              for r in [original] * bool(original) + rows])
        write_csv(out / "layer_sensitivity.csv", sensitivity)
        plot_accuracy_vs_compression(rows, dense_accuracy, original,
                                     papers.PUBLISHED.get(args.network, []), args.network,
                                     out / "accuracy_vs_compression.png")
        plot_layer_sensitivity(sensitivity, dense_accuracy, out / "layer_sensitivity.png")
    chosen = choose_point(rows, args.network)
    if args.network in papers.TARGET:
        print(f"chosen on validation (most compressed with validation error <= "
              f"{papers.TARGET[args.network][0]}% in {configs.BEST_FORMAT}): " + (
                  f"{chosen['schedule']} sparsity {chosen['target']}" if chosen else "none"))
    print(f"wrote {results}/sweep_pruning.csv, {results}/layer_sensitivity.csv and 2 plots in "
          f"{pics}/")


if __name__ == "__main__":
    cli.run(main)
