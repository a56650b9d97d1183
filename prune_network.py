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
import shutil
import time
from pathlib import Path

import configs
from datasets import images
from utils import cli, flags
from utils.files import backup, published, stage_output
from utils.plot_utils import WEIGHT_PLOTS, plot_weight_distributions


def parse():
    """The flags, checked; the stage's config from them."""
    p = cli.parser(__doc__)
    flags.add_flags(p, configs.PRUNING, configs.pruned_config())
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
    given = flags.given(args, configs.PRUNING)
    unless_given = dict(  # what --quick and --schedule variational change, unless given
        threshold=quick.get("threshold"), epochs=quick.get("epochs"),
        lr_values=configs.VARIATIONAL_LR_VALUES if args.schedule == "variational" else None)
    config = cli.stage_config(
        args, configs.pruned_config(args.network),
        **{**unless_given, **flags.changes(args, configs.PRUNING)},
        shrunk_from=args.structured_dir and str(args.structured_dir))
    flags.check_pruned(config, given)
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
    pics = cli.publish_dir(args, "--pics-dir", configs.network_folder("pics", args.network),
                           output=config.model_dir)
    plots = {"--pics-dir": (pics, WEIGHT_PLOTS.values())} if pics else {}
    with published(plots, "weights_distribution") as shared:  # pics/, on a full run
        import keras  # TensorFlow starts here, once the flags are checked (utils/cli.py)

        from networks.builders import layer_sizes
        from pruning import shrink, summary
        from training.checkpoints import (check_data, load_for_fine_tuning,
                                          load_shrunk_for_fine_tuning, save_checkpoint)
        from training.fit import check_shift
        keras.utils.set_random_seed(config.seed)
        load = load_shrunk_for_fine_tuning if config.shrunk_from else load_for_fine_tuning
        with stage_output(config.model_dir, "prune_network.py",
                          inputs=dict([source])) as out:
            model, optimizer, config = load(source[1], config)
            if config.shrunk_from:
                print(f"pruning inside the shrunk {layer_sizes(model)} network of "
                      f"{source[1]}/ ({model.count_params():,d} parameters)")
            data = images.from_flags(args)
            config = check_data(data, config, source[1], args.allow_other_data)
            check_shift(config)
            with backup(config.model_dir, "prune_network.py", config) as resume:  # kept until
                model, optimizer, config, kernels, results = prune(  # the checkpoint is written
                    model, optimizer, config, data, lambda c: load(source[1], c)[:2], resume)
                results["shrunk_sizes"] = (layer_sizes(shrink(model))
                                           if config.structure != "none" else None)
                save_checkpoint(out, model, optimizer, config, results=results)
                plot_weight_distributions(kernels, out, describe(config))
        for name in WEIGHT_PLOTS.values():  # published once the checkpoint is in place
            if (Path(config.model_dir) / name).is_file():
                shutil.copyfile(Path(config.model_dir) / name, shared / name)
    print("final masks:", summary(model), sep="\n")
    print(f"after fine-tuning: test accuracy {results['test_accuracy']:.4f}  loss "
          f"{results['test_loss']:.4f}  ({results['nonzero_weights']:,} non-zero weights, "
          f"{results['fine_tune_seconds']:.1f} s)")
    if results["shrunk_sizes"]:
        print(f"shrinks to a dense {results['shrunk_sizes']} network (layer sizes as the papers "
              f"give them, against {layer_sizes(model)} unpruned); deploy_pruned_model.py "
              f"exports it")
    print(f"saved {config.model_dir}/" + (f" and copied its plots to {pics}/" if pics else ""))


def prune(model, optimizer, config, data, load, backup_dir=None):
    """Prune and fine-tune `model` as `config` says (or search the sparsity, each probe from
    `load(config)`'s fresh weights); (model, optimizer, config, {plot title: kernels}, results).
    The test split is read before pruning, right after it and at the end; the search reads only
    the validation split. `backup_dir`: where the fine-tuning keeps its state to resume (not the
    search's probes, each a fit of its own)."""
    from networks.builders import weight_layers
    from training.evaluate import evaluate, logits_function
    from training.recipes import FirstPruning, prune_and_fine_tune, search_sparsity
    logits_fn, target = logits_function(model), describe(config)
    dense_acc, _ = evaluate(logits_fn, *data["test"])
    kernels = {"before pruning": [l.kernel.numpy() for l in weight_layers(model)]}
    first = FirstPruning(model, logits_fn, data["test"], dense_acc, target)
    if config.schedule in ("gradual", "variational"):
        print(f"{target}: prunes while it trains, no accuracy or plot between pruning and "
              f"fine-tuning")
    start, search = time.perf_counter(), None
    if config.max_accuracy_drop is None:
        masks, history = prune_and_fine_tune(model, optimizer, config, data, first,
                                             backup_dir=backup_dir)
        if config.schedule == "iterative" and first.kernels is None:  # resumed after round 1
            print("note: resumed after the first pruning: its accuracy before fine-tuning and "
                  "its weight histogram were the interrupted run's, and are not recorded")
    else:  # each probe from the dense weights; chosen on the validation split only
        dense_val, _ = evaluate(logits_fn, *data["validation"])
        model, optimizer, config, masks, history, search = search_sparsity(
            load, config, data, dense_val)
        logits_fn = logits_function(model)
        print(f"chose sparsity {config.sparsity:.5f}, the sparsest of {len(search)} within "
              f"{config.max_accuracy_drop:g} points")
    seconds = time.perf_counter() - start
    # The masks guarantee this; a checkpoint must never hold a pruned non-zero.
    for layer in weight_layers(model):
        mask = masks.get(f"{layer.name}/kernel")  # none: the output layer of --structure
        assert mask is None or not layer.kernel.numpy()[~mask].any(), f"{layer.name} grew back"
    kernels["after pruning"] = first.kernels
    kernels["after fine-tuning"] = [l.kernel.numpy() for l in weight_layers(model)]
    test_acc, test_loss = evaluate(logits_fn, *data["test"])
    return model, optimizer, config, kernels, dict(
        dense_test_accuracy=dense_acc, test_accuracy=test_acc, test_loss=test_loss,
        pruned_test_accuracy_before_fine_tuning=first.accuracy,
        nonzero_weights=sum(int(m.sum()) for m in masks.values()), fine_tune_seconds=seconds,
        history=history, search=search)


if __name__ == "__main__":
    cli.run(main)
