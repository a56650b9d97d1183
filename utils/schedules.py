"""Pruning schedules: when to prune how much, around masked fine-tuning.

  one-shot   (the original) prune once to the target, then fine-tune for all the epochs;
  iterative  (Han et al. 2015) k rounds of prune -> fine-tune with a rising target, each round's
             mask inside the previous one; the epochs are split evenly between the rounds and
             each round retrains with the whole learning-rate schedule compressed into its epochs;
  gradual    (Zhu & Gupta 2017) start dense and raise the sparsity along a cubic ramp during
             fine-tuning, the masks recomputed every few hundred steps inside the compiled step.
All three fine-tune for the same total number of epochs, so they cost the same.
"""
import numpy as np

import configs
from utils.pruning import GradualSchedule, dense_kernels, prune
from utils.training import fit

SCHEDULES = ("one-shot", "iterative", "gradual")
VALUE_OF = {"threshold": "threshold", "std": "quality",
            "layer-sparsity": "sparsity", "global-sparsity": "sparsity"}


def criterion_value(config):
    """The config field the criterion reads (threshold, quality or sparsity)."""
    if config.criterion not in VALUE_OF:
        raise ValueError(f"criterion must be one of {sorted(VALUE_OF)}, got {config.criterion!r}")
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


def prune_and_fine_tune(model, optimizer, config, data, on_prune=None, log=print):
    """Run `config.schedule`; (final masks, history). `on_prune(round, masks)` is called after
    each discrete pruning (one-shot: once, iterative: every round, gradual: never)."""
    check_config(config)
    on_prune = on_prune or (lambda r, masks: None)
    value = criterion_value(config)
    if config.schedule == "one-shot":
        masks = prune(model, config.criterion, value, optimizer)
        on_prune(1, masks)
        history, masks = fit(model, optimizer, config, data, masks=masks, log=log)
        return masks, history

    if config.schedule == "iterative":
        bounds = np.linspace(0, config.epochs, config.rounds + 1).round().astype(int)
        masks, history = None, []
        for r in range(1, config.rounds + 1):
            masks = prune(model, config.criterion, round_value(config, r), optimizer, masks)
            on_prune(r, masks)
            epochs = int(bounds[r] - bounds[r - 1])
            round_config = configs.override(
                config, epochs=epochs, seed=config.seed + r - 1, lr_boundaries=tuple(
                    round(b * epochs / config.epochs) for b in config.lr_boundaries))
            h, masks = fit(model, optimizer, round_config, data, masks=masks, log=log)
            history += [dict(entry, round=r) for entry in h]
        return masks, history

    steps = len(data["train"][1]) // config.batch_size * config.epochs
    schedule = GradualSchedule(
        final_sparsity=value, end_step=max(1, int(config.ramp_fraction * steps)),
        initial_sparsity=config.initial_sparsity, frequency=config.prune_every,
        criterion=config.criterion)
    dense = {k.path: np.ones(k.shape, bool) for k in dense_kernels(model)}
    history, masks = fit(model, optimizer, config, data, masks=dense, schedule=schedule, log=log)
    return masks, history
