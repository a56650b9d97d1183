"""Stage 2: prune the dense network by weight magnitude and fine-tune it under the mask.

    python prune_network.py                       # threshold 0.03, one-shot, 20 epochs (original)
    python prune_network.py --threshold 0.05 --epochs 5
    python prune_network.py --criterion global-sparsity --sparsity 0.97 --schedule gradual
    python prune_network.py --quick               # smoke test: MNIST subset, 1 epoch

Needs the checkpoint of train_network_dense.py. Writes <model-dir>/model.keras, masks.npz and
config.json, and three weight-distribution plots in pics/.
"""
import time
from pathlib import Path

import keras

import configs
from networks.network_base import evaluate, logits_function
from networks.network_dense import load_for_fine_tuning
from utils import cli
from utils.checkpoints import save_checkpoint
from utils.plot_utils import plot_weight_distribution
from utils.pruning import dense_kernels, sparsity_lines
from utils.schedules import SCHEDULES, VALUE_OF, criterion_value, prune_and_fine_tune


def main():
    p = cli.parser(__doc__)
    p.add_argument("--criterion", choices=list(VALUE_OF), help="how to pick the weights to prune "
                   "(default threshold)")
    p.add_argument("--threshold", type=float,
                   help="threshold: prune |w| below this (default 0.03; 0.01 with --quick)")
    p.add_argument("--quality", type=float, help="std: prune |w| < quality x layer std (default 1)")
    p.add_argument("--sparsity", type=float,
                   help="layer-/global-sparsity: fraction of weights to prune (default 0.95)")
    p.add_argument("--schedule", choices=SCHEDULES, help="default one-shot")
    p.add_argument("--rounds", type=int, help="iterative: prune/fine-tune rounds (default 3)")
    p.add_argument("--prune-every", type=int, help="gradual: steps between mask updates (100)")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default 20)")
    p.add_argument("--dense-dir", default=configs.DenseConfig.model_dir,
                   help="stage-1 checkpoint folder (default %(default)s)")
    p.add_argument("--model-dir", help=f"output folder (default {configs.PrunedConfig.model_dir})")
    p.add_argument("--pics-dir", default="pics", help="where the plots go (default %(default)s)")
    args = p.parse_args()
    quick = configs.QUICK if args.quick else {}
    threshold = quick.get("threshold") if args.threshold is None else args.threshold
    config = configs.override(
        configs.PrunedConfig(), criterion=args.criterion, threshold=threshold,
        quality=args.quality, sparsity=args.sparsity, schedule=args.schedule, rounds=args.rounds,
        prune_every=args.prune_every, epochs=args.epochs or quick.get("epochs"),
        model_dir=args.model_dir, seed=args.seed)
    keras.utils.set_random_seed(config.seed)
    pics = Path(args.pics_dir)
    target = f"{config.criterion} {criterion_value(config)}, {config.schedule}"

    model, optimizer = load_for_fine_tuning(args.dense_dir, config)
    data = cli.load_data(args)
    logits_fn = logits_function(model)
    dense_acc, _ = evaluate(logits_fn, *data["test"])
    plot_weight_distribution(dense_kernels(model), pics / "weights_distribution_before_pruning.png",
                             "Weights before pruning")
    before_fine_tuning = {}

    def report_first_pruning(round_, masks):
        if round_ == 1:
            before_fine_tuning["accuracy"], _ = evaluate(logits_fn, *data["test"])
            print(f"pruned ({target}, round 1):", *sparsity_lines(masks), sep="\n")
            print(f"test accuracy {dense_acc:.4f} dense -> {before_fine_tuning['accuracy']:.4f} "
                  f"pruned, before fine-tuning")
            plot_weight_distribution(dense_kernels(model),
                                     pics / "weights_distribution_after_pruning.png",
                                     f"Weights after pruning ({target}, round 1)")

    if config.schedule == "gradual":
        print("gradual pruning prunes while it fine-tunes: no accuracy or plot between the two")
    start = time.perf_counter()
    masks, history = prune_and_fine_tune(model, optimizer, config, data, report_first_pruning)
    seconds = time.perf_counter() - start
    for kernel in dense_kernels(model):  # the masked step guarantees this; a checkpoint must too
        assert not kernel.numpy()[~masks[kernel.path]].any(), f"{kernel.path} grew back"
    test_acc, test_loss = evaluate(logits_fn, *data["test"])
    plot_weight_distribution(dense_kernels(model),
                             pics / "weights_distribution_after_fine_tuning.png",
                             f"Weights after pruning ({target}) and fine-tuning")

    nonzero = sum(int(m.sum()) for m in masks.values())
    save_checkpoint(config.model_dir, model, optimizer, config, masks=masks, results=dict(
        dense_test_accuracy=dense_acc, test_accuracy=test_acc, test_loss=test_loss,
        pruned_test_accuracy_before_fine_tuning=before_fine_tuning.get("accuracy"),
        nonzero_weights=nonzero, fine_tune_seconds=seconds, history=history))
    print("final masks:", *sparsity_lines(masks), sep="\n")
    print(f"after fine-tuning: test accuracy {test_acc:.4f}  loss {test_loss:.4f}  "
          f"({nonzero:,} non-zero weights, {seconds:.1f} s)")
    print(f"saved {config.model_dir}/ and the plots in {pics}/")


if __name__ == "__main__":
    cli.run(main)
