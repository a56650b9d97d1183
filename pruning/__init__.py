"""Magnitude pruning for any Keras 3 model, trained with plain `model.fit`.

    import pruning
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.9)     # zeroes, masks as constraints
    model.compile(...); model.fit(...)                             # pruned weights stay exactly 0
    schedule = pruning.PolynomialDecay(final_sparsity=0.95, end_step=2000)
    model.fit(..., callbacks=[pruning.GradualPruning(schedule)])   # or prune while training
    pruning.strip_pruning(model)                                   # a plain model for export

Self-contained (Keras 3, TensorFlow, NumPy): copy this folder into your project or import it.
No maintained library does this for Keras 3; the TF Model Optimization Toolkit needs Keras 2.
  criteria.py   which weights to prune: NumPy in, NumPy out
  masks.py      masks as kernel constraints; prune_low_magnitude, strip_pruning
  callbacks.py  schedules as callbacks: GradualPruning (Zhu & Gupta), IterativePruning (Han et al.)
"""
from pruning.callbacks import GradualPruning, IterativePruning, PolynomialDecay
from pruning.criteria import sparsity
from pruning.masks import (PruningMask, get_masks, prunable_layers, prune_low_magnitude,
                           pruned_layers, sparsity_lines, strip_pruning)

__all__ = ["GradualPruning", "IterativePruning", "PolynomialDecay", "PruningMask", "get_masks",
           "prunable_layers", "prune_low_magnitude", "pruned_layers", "sparsity", "sparsity_lines",
           "strip_pruning"]
