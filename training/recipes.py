"""The pruning recipes (the stage's --schedule): when to prune how much, around masked
fine-tuning.

  one-shot   (the original) prune once to the target, then fine-tune for all the epochs;
  iterative  (Han et al. 2015) k rounds of prune -> fine-tune with a rising target, each round's
             mask inside the previous one; the epochs are split evenly between the rounds and
             each round retrains with the whole learning-rate schedule compressed into its epochs;
  gradual    (Zhu & Gupta 2017) start dense and raise the sparsity along a cubic ramp during
             fine-tuning, the masks recomputed every few hundred steps, between steps;
  variational (Molchanov et al. 2017) train with sparse variational dropout (Adam, the KL's weight
             rising over the first epochs), then prune every weight with log alpha > 3: no
             target, the data set the sparsity of each layer.
The first three prune single weights, blocks (--block) or whole groups (--structure: input
features or units, scored by --norm, optionally with a group-lasso penalty while fine-tuning).
All fine-tune for the same total number of epochs, so they cost about the same
(variational: one more matrix product per layer and step);
`search_sparsity` (--max-accuracy-drop) runs one several times to find the sparsity the data
allows, and --allocation sensitivity gives each layer its own. This module maps a
`configs.PrunedConfig` onto the `pruning` package's calls and callbacks; one `model.fit` each.
"""
import math
from pathlib import Path

import numpy as np

import configs
from networks.builders import weight_layers
import keras

from pruning import (GradualPruning, IterativePruning, KLWarmup, PolynomialDecay,
                     add_group_lasso, allocate_sparsity, get_masks, layer_sensitivity,
                     prune_low_magnitude, prunable_weights, strip_variational, summary,
                     variational_dropout, variational_masks)
from training.checkpoints import pruned_layers
from training.evaluate import evaluate, logits_function
from training.fit import TrainingDiverged, fit
from utils import flags


def pattern(config):
    """What `config` prunes in: whole groups (--structure) or blocks (--block)."""
    return config.block if config.structure == "none" else config.structure


def round_value(config, r, value=None):
    """Target of iterative round r (1..rounds) toward `value` (default the config's; a dict:
    per weight): thresholds rise linearly to the final one; sparsities so that the kept
    fraction shrinks geometrically, (1 - s)^(r / rounds)."""
    value = configs.criterion_value(config) if value is None else value
    if isinstance(value, dict):
        return {k: round_value(config, r, v) for k, v in value.items()}
    if configs.CRITERION_FIELD[config.criterion] == "sparsity":
        return 1 - (1 - value) ** (r / config.rounds)
    return value * r / config.rounds


def sensitivity_allocation(model, config, data, layers, log=print):
    """{weight key: sparsity} of `layers` totalling `config.sparsity`, from each weight's
    sensitivity alone on the validation split (`pruning.layer_sensitivity`, at
    configs.SENSITIVITY_LEVELS): --allocation sensitivity."""
    logits_fn = logits_function(model)
    curves = layer_sensitivity(model, lambda m: evaluate(logits_fn, *data["validation"])[0],
                               configs.SENSITIVITY_LEVELS, layers)
    sizes = {w.key: int(np.prod(w.variable.shape)) for w in prunable_weights(model)
             if w.key in curves}
    allocation = allocate_sparsity(curves, sizes, config.sparsity)
    log("sensitivity allocation (validation): " + ", ".join(
        f"{k.removesuffix('/kernel')} {v:.1%}" for k, v in allocation.items()))
    return allocation


class FirstPruning:
    """`on_prune` of `prune_and_fine_tune` for the pruning stage: right after the first pruning
    (before any fine-tuning) it prints the masks and the test accuracy, and keeps that accuracy
    and the kernels for the checkpoint's results and the plots (None if it never prunes
    discretely: gradual)."""

    def __init__(self, model, logits_fn, test, dense_accuracy, target):
        self.model, self.logits_fn, self.test = model, logits_fn, test
        self.dense_accuracy, self.target = dense_accuracy, target
        self.accuracy = self.kernels = None

    def __call__(self, round_, masks):
        if round_ != 1:
            return
        self.accuracy, _ = evaluate(self.logits_fn, *self.test)
        self.kernels = [l.kernel.numpy() for l in weight_layers(self.model)]
        print(f"pruned ({self.target}, round 1):", summary(self.model), sep="\n")
        print(f"test accuracy {self.dense_accuracy:.4f} dense -> {self.accuracy:.4f} pruned, "
              f"before fine-tuning")


def prune_and_fine_tune(model, optimizer, config, data, on_prune=None, log=print, backup_dir=None):
    """Run `config.schedule`; (final masks, history). `on_prune(round, masks)` is called after
    each discrete pruning (one-shot: once, iterative: every round, gradual: never). `backup_dir`:
    where the one `fit` keeps its state to resume (training/fit.py). With `config.distill`, the
    teacher is a copy of `model` as it comes, unpruned."""
    flags.check_pruned(config)
    on_prune = on_prune or (lambda r, masks: None)
    teacher = frozen_copy(model) if config.distill else None
    if config.schedule == "variational":
        return variational(model, config, data, log, backup_dir, teacher)
    value = configs.criterion_value(config)
    layers, kind = pruned_layers(model, config), dict(pattern=pattern(config), norm=config.norm)
    if config.allocation == "sensitivity":  # the per-weight targets name the weights
        value = sensitivity_allocation(model, config, data, layers, log)
        layers = None
    if config.group_lasso:
        add_group_lasso(model, config.group_lasso, config.structure, layers)
    if config.schedule == "one-shot":
        prune_low_magnitude(model, config.criterion, value, layers=layers, **kind)
        on_prune(1, get_masks(model))
        history = fit(model, optimizer, config, data, log=log, backup_dir=backup_dir,
                      teacher=teacher)
        return get_masks(model), history

    if config.schedule == "iterative":
        starts = np.linspace(0, config.epochs, config.rounds + 1).round().astype(int)
        rounds = IterativePruning(config.criterion, {
            int(starts[r - 1]): round_value(config, r, value)
            for r in range(1, config.rounds + 1)},
            layers=layers, **kind)
        rounds.on_prune = lambda epoch, masks: on_prune(int(np.searchsorted(starts, epoch)) + 1,
                                                        masks)

        def learning_rate(epoch):
            """Each round retrains with the whole schedule compressed into its epochs."""
            r = int(np.searchsorted(starts, epoch, side="right"))
            epochs = int(starts[r] - starts[r - 1])
            boundaries = tuple(round(b * epochs / config.epochs) for b in config.lr_boundaries)
            return configs.learning_rate(
                configs.override(config, epochs=epochs, lr_boundaries=boundaries),
                epoch - starts[r - 1])

        history = fit(model, optimizer, config, data, [rounds], learning_rate, log=log,
                      backup_dir=backup_dir, teacher=teacher)
        for entry in history:
            entry["round"] = int(np.searchsorted(starts, entry["epoch"] - 1, side="right"))
        return get_masks(model), history

    steps = len(data["train"][1]) // config.batch_size * config.epochs
    schedule = PolynomialDecay(
        final_sparsity=config.sparsity, end_step=max(1, int(config.ramp_fraction * steps)),
        initial_sparsity=config.initial_sparsity, frequency=config.prune_every)
    zero = dict.fromkeys(value, 0.0) if isinstance(value, dict) else 0.0
    prune_low_magnitude(model, config.criterion, zero, layers=layers, **kind)  # dense: to shrink
    history = fit(model, optimizer, config, data, [GradualPruning(
        schedule, config.criterion, layers=layers, final_sparsities=value if isinstance(
            value, dict) else None, **kind)], log=log, backup_dir=backup_dir, teacher=teacher)
    return get_masks(model), history


def frozen_copy(model):
    """A copy of `model` with its weights now, which training `model` leaves as it is."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.trainable = False
    return copy


def variational(model, config, data, log=print, backup_dir=None, teacher=None):
    """--schedule variational: train a sparse-variational-dropout copy of `model` (every weight
    layer; with --structure units a noise per unit of every layer but the output one, with
    --structure inputs per input feature of every layer) with Adam, then write its pruned weights
    back into `model`, masked; (masks, history).
    The stage's SGD optimizer is left unused: log sigma^2's gradients are ~1/N, which SGD would
    barely move. `teacher`: training.fit.fit's. With `config.masked_epochs`, the pruned weights
    are then fine-tuned that many epochs more under their masks, without the noise (Adam at the
    last learning rate) and on the labels alone: LeNet-300-100 seed 123 distilled at 0.5 ended
    30 such epochs at 1.72% validation error, at 1.92% with the teacher kept; their history
    entries follow the variational ones, marked "masked"."""
    copy = variational_dropout(model, train_size=len(data["train"][1]),
                               layers=pruned_layers(model, config), seed=config.seed,
                               pattern={"none": "unstructured"}.get(config.structure,
                                                                     config.structure))
    history = fit(copy, keras.optimizers.Adam(), config, data,
                  [KLWarmup(min(config.kl_warmup_epochs, config.epochs)), StopOnEmptyLayer()],
                  log=log, backup_dir=backup_dir, teacher=teacher)
    strip_variational(copy, into=model)
    if config.masked_epochs:  # the noise gone, what is left fits the data on its own
        masked = Path(backup_dir) / "masked" if backup_dir else None
        if masked:
            masked.mkdir(exist_ok=True)
        tail = fit(model, keras.optimizers.Adam(), configs.override(  # on the labels alone
            config, epochs=config.masked_epochs, lr_values=config.lr_values[-1:],
            lr_boundaries=()), data, log=log, backup_dir=masked)
        history += [{**entry, "epoch": config.epochs + entry["epoch"], "masked": True}
                    for entry in tail]
    return get_masks(model), history


class StopOnEmptyLayer(keras.callbacks.Callback):
    """End a variational run, saving nothing, at the end of the first epoch where a layer has
    learnt to drop every weight: its output no longer depends on its input, and more epochs
    would only be spent on a network that cannot be deployed."""

    def on_epoch_end(self, epoch, logs=None):
        empty = sorted(k for k, mask in variational_masks(self.model).items() if not mask.any())
        if empty:
            raise ValueError(f"variational dropout dropped every weight of {empty} by epoch "
                             f"{epoch + 1}: nothing is saved; train fewer --epochs, a longer "
                             f"--kl-warmup-epochs, or start from a better-trained network")


def kept_midpoint(feasible, infeasible):
    """The fraction of weights to keep in the next probe: the geometric mean of the smallest
    fraction known to stay within the accuracy drop and the largest known not to, so that each
    probe halves the range of the compression ratio in log steps (1x-1000x: 32x first)."""
    return math.sqrt(feasible * infeasible)


def search_sparsity(load, config, data, dense_validation, log=print):
    """Bisect the criterion's sparsity for the sparsest network whose validation accuracy stays
    within `config.max_accuracy_drop` points of `dense_validation` (the starting network's: the
    dense one, or the shrunk one of --structured-dir), in `config.search_steps` runs of
    `config.schedule`, each from the starting weights (`load(config)`: a fresh (model,
    optimizer)). Only the validation split is read.

    Returns (model, optimizer, config, masks, history) of the sparsest run within the drop, and
    the probes [{sparsity, validation_accuracy, within}]. Raises ValueError if no probe is
    within it (nothing to save).
    """
    feasible, infeasible = 1.0, configs.SEARCH_FEWEST_KEPT  # kept fractions: assumed, not run
    start = "starting network's" if config.shrunk_from else "dense"  # --structured-dir: shrunk
    best, probes = None, []
    for step in range(1, config.search_steps + 1):
        kept = kept_midpoint(feasible, infeasible)
        probe = configs.override(config, sparsity=round(1 - kept, 5))
        if any(p["sparsity"] == probe.sparsity for p in probes):  # the range is one sparsity
            log(f"search {step}/{config.search_steps}: sparsity {probe.sparsity:.5f} again: "
                f"the search has converged, {step - 1} runs")
            break
        model, optimizer = load(probe)
        log(f"search {step}/{config.search_steps}: sparsity {probe.sparsity:.5f} "
            f"({1 / kept:.1f}x fewer weights)")
        try:
            masks, history = prune_and_fine_tune(model, optimizer, probe, data, log=log)
        except TrainingDiverged:  # not a sign of too much sparsity: every probe would repeat it
            raise
        except ValueError as e:  # a sparsity the criterion refuses (a layer left with nothing)
            log(f"search {step}/{config.search_steps}: sparsity {probe.sparsity:.5f} cannot run "
                f"({e}): taken as too sparse")
            probes.append(dict(sparsity=probe.sparsity, validation_accuracy=None, within=False))
            infeasible = kept
            continue
        accuracy = float(history[-1]["val_accuracy"])
        within = 100 * (dense_validation - accuracy) <= config.max_accuracy_drop
        probes.append(dict(sparsity=probe.sparsity, validation_accuracy=accuracy, within=within))
        log(f"search {step}/{config.search_steps}: sparsity {probe.sparsity:.5f} -> validation "
            f"accuracy {accuracy:.4f} ({start} {dense_validation:.4f}): "
            f"{'within' if within else 'beyond'} {config.max_accuracy_drop:g} points")
        if within:
            feasible, best = kept, (model, optimizer, probe, masks, history)
        else:
            infeasible = kept
    if best is None:
        least = min(probes, key=lambda p: p["sparsity"])  # the last: all moved toward dense
        reached = ("could not run" if least["validation_accuracy"] is None else
                   f"reached {least['validation_accuracy']:.4f}")
        raise ValueError(f"no sparsity tried stays within {config.max_accuracy_drop:g} points of "
                         f"the {start} validation accuracy {dense_validation:.4f} (the least "
                         f"sparse, {least['sparsity']:.4f}, {reached}): allow a larger "
                         f"--max-accuracy-drop or more --search-steps")
    return (*best, probes)
