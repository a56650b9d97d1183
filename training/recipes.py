"""The pruning recipes (the stage's --schedule): when to prune how much, around masked
fine-tuning.

  one-shot   (the original) prune once to the target, then fine-tune for all the epochs;
  iterative  (Han et al. 2015) k rounds of prune -> fine-tune with a rising target, each round's
             mask inside the previous one; the epochs are split evenly between the rounds and
             each round retrains with the whole learning-rate schedule compressed into its epochs;
  gradual    (Zhu & Gupta 2017) start dense and raise the sparsity along a cubic ramp during
             fine-tuning, the masks recomputed every few hundred steps inside the compiled step.
All three fine-tune for the same total number of epochs, so they cost the same. This module maps
a `configs.PrunedConfig` onto the `pruning` package's calls and callbacks; one `model.fit` each.
"""
import numpy as np

import configs
from networks.builders import weight_layers
from pruning import (GradualPruning, IterativePruning, PolynomialDecay, criteria, get_masks,
                     prune_low_magnitude, summary)
from training.evaluate import evaluate
from training.fit import fit

SCHEDULES = ("one-shot", "iterative", "gradual")
VALUE_OF = criteria.VALUE_NAME  # criterion -> the PrunedConfig field holding its value


def criterion_value(config):
    """The config field the criterion reads (threshold, quality or sparsity)."""
    criteria.check_criterion(config.criterion)
    return getattr(config, VALUE_OF[config.criterion])


# Which flags only one criterion or schedule reads: {config field: (the field choosing, its values)}
USED_ONLY_BY = {
    **{field: ("criterion", [c for c, f in VALUE_OF.items() if f == field])
       for field in set(VALUE_OF.values())},
    "rounds": ("schedule", ["iterative"]),
    "prune_every": ("schedule", ["gradual"]),
}


def check_config(config, given=()):
    """Raise ValueError, naming the flags, for settings that cannot run together, or for a setting
    in `given` (the fields a user set) that the chosen criterion or schedule would ignore."""
    criterion_value(config)
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {config.schedule!r}")
    for field in sorted(given):
        if field in USED_ONLY_BY:
            chooser, users = USED_ONLY_BY[field]
            if getattr(config, chooser) not in users:
                raise ValueError(
                    f"--{field.replace('_', '-')} is not used by --{chooser} "
                    f"{getattr(config, chooser)} (only by --{chooser} {' or '.join(users)})")
    if config.schedule == "gradual" and VALUE_OF[config.criterion] != "sparsity":
        raise ValueError(f"--schedule gradual ramps up a sparsity: it needs --criterion "
                         f"layer-sparsity or global-sparsity, got {config.criterion}")
    if len(config.lr_values) != len(config.lr_boundaries) + 1:
        raise ValueError(f"--lr-values needs {len(config.lr_boundaries) + 1} learning rates "
                         f"(the rate steps down after epochs {list(config.lr_boundaries)}), got "
                         f"{len(config.lr_values)}")
    if config.schedule == "iterative" and not 1 <= config.rounds <= config.epochs:
        raise ValueError(f"--rounds must be in [1, --epochs {config.epochs}] (each round "
                         f"fine-tunes at least one epoch), got {config.rounds}")


def round_value(config, r):
    """Target of iterative round r (1..rounds): thresholds rise linearly to the final one;
    sparsities so that the kept fraction shrinks geometrically, (1 - s)^(r / rounds)."""
    value = criterion_value(config)
    if VALUE_OF[config.criterion] == "sparsity":
        return 1 - (1 - value) ** (r / config.rounds)
    return value * r / config.rounds


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


def prune_and_fine_tune(model, optimizer, config, data, on_prune=None, log=print):
    """Run `config.schedule`; (final masks, history). `on_prune(round, masks)` is called after
    each discrete pruning (one-shot: once, iterative: every round, gradual: never)."""
    check_config(config)
    on_prune = on_prune or (lambda r, masks: None)
    value = criterion_value(config)
    if config.schedule == "one-shot":
        on_prune(1, prune_low_magnitude(model, config.criterion, value, block=config.block))
        history = fit(model, optimizer, config, data, log=log)
        return get_masks(model), history

    if config.schedule == "iterative":
        starts = np.linspace(0, config.epochs, config.rounds + 1).round().astype(int)
        rounds = IterativePruning(config.criterion, {
            int(starts[r - 1]): round_value(config, r) for r in range(1, config.rounds + 1)},
            block=config.block)
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

        history = fit(model, optimizer, config, data, [rounds], learning_rate, log=log)
        for entry in history:
            entry["round"] = int(np.searchsorted(starts, entry["epoch"] - 1, side="right"))
        return get_masks(model), history

    steps = len(data["train"][1]) // config.batch_size * config.epochs
    schedule = PolynomialDecay(
        final_sparsity=value, end_step=max(1, int(config.ramp_fraction * steps)),
        initial_sparsity=config.initial_sparsity, frequency=config.prune_every)
    prune_low_magnitude(model, config.criterion, 0.0)  # dense masks for the ramp to shrink
    history = fit(model, optimizer, config, data,
                  [GradualPruning(schedule, config.criterion, config.block)], log=log)
    return get_masks(model), history
