"""Stage 2: prune the dense network by weight magnitude and fine-tune it under the mask.

    python prune_network.py                       # threshold 0.03, one-shot, 20 epochs (original)
    python prune_network.py --network lenet-5     # its recipe: configs.NETWORKS
    python prune_network.py --threshold 0.05 --epochs 5
    python prune_network.py --criterion global-sparsity --sparsity 0.97 --schedule gradual
    python prune_network.py --block 1x4           # whole blocks: what .tflite runs fast
    python prune_network.py --structure inputs --criterion layer-sparsity --sparsity 0.9
                                                  # whole pixels and units: a smaller network
    python prune_network.py --structured-dir DIR --block 1x4 --criterion layer-sparsity
                                                  # sparse blocks inside DIR's shrunk network
    python prune_network.py --criterion layer-sparsity --schedule gradual --max-accuracy-drop 0.5
                                                  # the sparsest within 0.5 points (validation)
    python prune_network.py --network lenet-5 --schedule variational --epochs 30
                                                  # sparse variational dropout: no target
    python prune_network.py --quick               # smoke test: MNIST subset, 1 epoch

Needs the checkpoint of train_network_dense.py (of the same --network and data), or with
--structured-dir one of this script's --structure runs, whose shrunk network it prunes. Writes
<model-dir>/model.keras (with its pruning masks), config.json, stage.json and the
weight-distribution plots; a full run (not --quick) copies the plots to pics/ (pics/<network>/
for the LeNets) once it has succeeded. <model-dir> must be new, empty or this script's earlier
output; it is replaced only when the run succeeds.
"""
import contextlib
import time
from pathlib import Path

import configs
from utils import cli
from utils.atomic import check_publishable, publish
from utils.checkpoints import lock, stage_output
from utils.plot_utils import WEIGHT_PLOTS, plot_weight_distributions


def parse():
    """The flags, checked; the stage's config from them."""
    p = cli.parser(__doc__)
    p.add_argument("--criterion", choices=list(configs.CRITERION_FIELD),
                   help="how to pick the weights to prune (default: the network's recipe, "
                        "threshold for mlp)")
    p.add_argument("--threshold", type=cli.non_negative,
                   help="threshold: prune |w| below this (default 0.03; 0.01 with --quick)")
    p.add_argument("--quality", type=cli.non_negative,
                   help="std: prune |w| < quality x layer std (default 1)")
    p.add_argument("--sparsity", type=cli.fraction, help="layer-/global-sparsity: fraction of "
                   "weights to prune (default: the network's recipe, 0.95 for mlp)")
    p.add_argument("--block", type=cli.block,
                   help="prune in whole blocks of OUTPUTSxINPUTS "
                   "weights: each layer keeps as many weights as the criterion would, in its "
                   "blocks of largest mean |w|. 1x4 (4 consecutive inputs of one unit) is the "
                   "float32 layout TFLite's sparse kernel runs, 1x16 the int8 one (default 1x1: "
                   "single weights)")
    p.add_argument("--structure", choices=configs.STRUCTURES,
                   help="prune whole groups, so that a smaller dense network remains (the "
                        "deploy stage exports it shrunk): 'inputs', whole input features of "
                        "every layer (pixels, and the units of the layer before); 'units', whole "
                        "units and conv filters of every layer but the output one; each layer "
                        "keeps about as many weights as the criterion would (default none)")
    p.add_argument("--norm", choices=configs.NORMS,
                   help="--structure: score groups by their mean |w| (l1) or root mean square "
                        "(l2) (default l1)")
    p.add_argument("--group-lasso", type=cli.non_negative, metavar="STRENGTH",
                   help="--structure: add a group-lasso penalty of this strength while "
                        "fine-tuning, driving whole groups toward zero (default 0: none)")
    p.add_argument("--allocation", choices=configs.ALLOCATIONS,
                   help="layer-sparsity: 'uniform', every layer at --sparsity; 'sensitivity', "
                        "each layer's own sparsity from how much it alone loses on the "
                        "validation split, the total at --sparsity (Han et al. 2015) "
                        "(default uniform)")
    p.add_argument("--max-accuracy-drop", type=cli.non_negative, metavar="POINTS",
                   help="search the sparsity instead of giving it: the sparsest network whose "
                        "validation accuracy stays within this many points of the dense "
                        "model's (e.g. 0.5), by bisection over --search-steps runs of the "
                        "schedule (layer-/global-sparsity; default: off)")
    p.add_argument("--search-steps", type=cli.positive_int,
                   help=f"--max-accuracy-drop: runs of the bisection, each a whole fine-tuning "
                        f"(default {configs.PrunedConfig.search_steps})")
    p.add_argument("--schedule", choices=configs.SCHEDULES,
                   help="default: the network's recipe, one-shot for mlp; 'variational' trains "
                        "with sparse variational dropout (Adam) and prunes what it learns to "
                        "drop (log alpha > 3), with no criterion or sparsity")
    p.add_argument("--kl-warmup-epochs", type=cli.positive_int, metavar="N",
                   help=f"variational: epochs over which the KL's weight rises to 1 (default "
                        f"{configs.PrunedConfig.kl_warmup_epochs})")
    p.add_argument("--rounds", type=cli.positive_int,
                   help="iterative: prune/fine-tune rounds, at most --epochs (default 3)")
    p.add_argument("--prune-every", type=cli.positive_int,
                   help="gradual: steps between mask updates (100)")
    p.add_argument("--epochs", type=cli.positive_int, help="fine-tuning epochs (default 20)")
    p.add_argument("--lr-values", type=cli.positive, nargs="+", metavar="LR",
                   help="fine-tuning learning rates, one per step of the schedule (default: the "
                        "network's recipe, 1e-3 1e-4 for mlp: the first half, the second half; "
                        "variational, with Adam: 1e-3 1e-4)")
    p.add_argument("--lr-boundaries", type=cli.positive_int, nargs="+", metavar="EPOCH",
                   help="epochs after which the learning rate steps to the next of --lr-values "
                        "(default: the network's recipe, 10 for mlp)")
    cli.folder_flag(p, "--dense-dir", "stage-1 checkpoint folder", configs.DenseConfig.model_dir)
    p.add_argument("--structured-dir", type=cli.path, metavar="DIR",
                   help="start from this --structure checkpoint of prune_network.py instead of "
                        "the dense one: shrink it, then prune single weights or --block blocks "
                        "inside the smaller network and fine-tune it (default: none)")
    cli.allow_other_data_flag(p)
    cli.folder_flag(p, "--model-dir", "output folder", configs.PrunedConfig.model_dir)
    p.add_argument("--pics-dir", type=cli.path, help="where a full run copies its plots "
                   "(default: the repo's pics/, pics/<network>/ for the LeNets; --quick: nowhere)")
    args = p.parse_args()
    if args.structured_dir and args.dense_dir:
        raise ValueError("--structured-dir and --dense-dir are both a starting point: give one")
    quick = configs.QUICK if args.quick else {}
    config = cli.stage_config(
        args, configs.pruned_config(args.network), criterion=args.criterion,
        threshold=quick.get("threshold") if args.threshold is None else args.threshold,
        quality=args.quality, sparsity=args.sparsity, block=args.block,
        structure=args.structure, norm=args.norm, group_lasso=args.group_lasso,
        allocation=args.allocation, max_accuracy_drop=args.max_accuracy_drop,
        search_steps=args.search_steps,
        schedule=args.schedule, kl_warmup_epochs=args.kl_warmup_epochs, shrunk_from=args.structured_dir and str(args.structured_dir),
        rounds=args.rounds, prune_every=args.prune_every,
        epochs=args.epochs or quick.get("epochs"),
        lr_values=tuple(args.lr_values) if args.lr_values else (
            configs.VARIATIONAL_LR_VALUES if args.schedule == "variational" else None),
        lr_boundaries=args.lr_boundaries and tuple(args.lr_boundaries))
    configs.check_pruned(config, given=cli.given(args, [*configs.USED_ONLY_BY, "search_steps",
                                                         *configs.VARIATIONAL_DECIDES]))
    return args, config


def describe(config):
    """How `config` prunes, in a few words: for the log and the plots' titles."""
    if config.schedule == "variational":
        return "sparse variational dropout, log alpha > 3"
    blocks = "" if config.block == (1, 1) else f" in {config.block[0]}x{config.block[1]} blocks"
    if config.structure != "none":
        blocks = f" in whole {config.structure}"
    return f"{config.criterion} {configs.criterion_value(config)}{blocks}, {config.schedule}"


def main():
    args, config = parse()
    source = (("--structured-dir", args.structured_dir) if args.structured_dir else (
        "--dense-dir", args.dense_dir or configs.repo_path(configs.dense_config(
            args.network).model_dir)))
    pics = cli.publish_dir(args, "--pics-dir", configs.network_folder("pics", args.network))
    if pics:
        check_publishable(WEIGHT_PLOTS.values(), pics, "--pics-dir")
    import keras  # TensorFlow starts here, once the flags are checked (utils/cli.py)

    from networks.builders import layer_sizes, weight_layers
    from pruning import shrink, summary
    from training.checkpoints import (check_data, load_for_fine_tuning,
                                      load_shrunk_for_fine_tuning, save_checkpoint)
    from training.evaluate import evaluate, logits_function
    from training.recipes import FirstPruning, prune_and_fine_tune, search_sparsity
    keras.utils.set_random_seed(config.seed)
    target = describe(config)
    load = load_shrunk_for_fine_tuning if config.shrunk_from else load_for_fine_tuning

    with lock(pics / "weights_distribution", "--pics-dir") if pics else contextlib.nullcontext():
        with stage_output(config.model_dir, "prune_network.py",
                          inputs=dict([source])) as out:
            model, optimizer, config = load(source[1], config)
            if config.shrunk_from:
                print(f"pruning inside the shrunk {layer_sizes(model)} network of "
                      f"{source[1]}/ ({model.count_params():,d} parameters)")
            data = cli.load_data(args)
            config = check_data(data, config, source[1], args.allow_other_data)
            logits_fn = logits_function(model)
            dense_acc, _ = evaluate(logits_fn, *data["test"])
            kernels = {"before pruning": [l.kernel.numpy() for l in weight_layers(model)]}
            first = FirstPruning(model, logits_fn, data["test"], dense_acc, target)
            if config.schedule in ("gradual", "variational"):
                print(f"{target}: prunes while it trains, no accuracy or plot between pruning "
                      f"and fine-tuning")

            start, search = time.perf_counter(), None
            if config.max_accuracy_drop is None:
                masks, history = prune_and_fine_tune(model, optimizer, config, data, first)
            else:  # each probe from the dense weights; chosen on the validation split only
                dense_val, _ = evaluate(logits_fn, *data["validation"])
                model, optimizer, config, masks, history, search = search_sparsity(
                    lambda c: load(source[1], c)[:2], config, data, dense_val)
                logits_fn, target = logits_function(model), describe(config)
                print(f"chose sparsity {config.sparsity:.5f}, the sparsest of "
                      f"{len(search)} within {config.max_accuracy_drop:g} points")
            seconds = time.perf_counter() - start
            # The masks guarantee this; a checkpoint must never hold a pruned non-zero.
            for layer in weight_layers(model):
                mask = masks.get(f"{layer.name}/kernel")  # none: the output layer of --structure
                assert mask is None or not layer.kernel.numpy()[~mask].any(), \
                    f"{layer.name} grew back"
            kernels["after pruning"] = first.kernels
            kernels["after fine-tuning"] = [l.kernel.numpy() for l in weight_layers(model)]
            test_acc, test_loss = evaluate(logits_fn, *data["test"])

            nonzero = sum(int(m.sum()) for m in masks.values())
            sizes = layer_sizes(shrink(model)) if config.structure != "none" else None
            save_checkpoint(out, model, optimizer, config, results=dict(shrunk_sizes=sizes,
                dense_test_accuracy=dense_acc, test_accuracy=test_acc, test_loss=test_loss,
                pruned_test_accuracy_before_fine_tuning=first.accuracy,
                nonzero_weights=nonzero, fine_tune_seconds=seconds, history=history,
                search=search))
            plot_weight_distributions(kernels, out, target)
        if pics:
            publish(WEIGHT_PLOTS.values(), Path(config.model_dir), pics, "--pics-dir")
    print("final masks:", summary(model), sep="\n")
    print(f"after fine-tuning: test accuracy {test_acc:.4f}  loss {test_loss:.4f}  "
          f"({nonzero:,} non-zero weights, {seconds:.1f} s)")
    if sizes:
        print(f"shrinks to a dense {sizes} network (layer sizes as the papers give them, against "
              f"{layer_sizes(model)} unpruned); deploy_pruned_model.py exports it")
    print(f"saved {config.model_dir}/" + (f" and copied its plots to {pics}/" if pics else ""))


if __name__ == "__main__":
    cli.run(main)
