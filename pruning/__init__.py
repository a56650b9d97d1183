"""Magnitude pruning for any Keras 3 model, trained with plain `model.fit`, on TensorFlow, JAX and
PyTorch.

    import pruning
    model.fit(x, y)                                                # train (or start untrained)
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.8)      # in place: zeros, masks held
    model.fit(x, y)                                                # pruned weights stay exactly 0
    schedule = pruning.PolynomialDecay(final_sparsity=0.95, end_step=2000)
    model.fit(x, y, callbacks=[pruning.GradualPruning(schedule)])  # or prune while training
    print(pruning.summary(model))                                  # what is pruned, what is not
    pruning.strip_pruning(model)                                   # a plain model for export
    small = pruning.shrink(model)      # after pattern="units" / "inputs": a smaller dense model

Depends on Keras 3 and NumPy only; the backend is yours.
  criteria.py   which weights to prune, in which pattern (1x4 blocks, 2:4, whole units or inputs),
                along which axes (Layout): NumPy in, NumPy out, the one implementation
  masks.py      PruningMask, the constraint that holds the zeros; apply_masks; EMA's averages
  registry.py   the table of layer kinds: which weights are pruned, along which axes;
                register_prunable for your own
  prune.py      prune_low_magnitude, get_masks, strip_pruning, restore_masks
  summary.py    summary(model)
  regularizers.py  GroupLasso, add_group_lasso: whole units or inputs driven to zero by training
  shrink.py     shrink: a structurally pruned model rebuilt smaller, without its removed units
  sensitivity.py  layer_sensitivity, allocate_sparsity: per-layer sparsities from each layer's loss
  variational.py  variational_dropout, strip_variational, KLWarmup: sparse variational dropout
                (Molchanov et al. 2017), pruning learnt while training, no sparsity given
  callbacks.py  schedules as callbacks: GradualPruning (Zhu & Gupta), IterativePruning (Han et al.)
"""
from pruning.callbacks import GradualPruning, IterativePruning, PolynomialDecay
from pruning.criteria import sparsity
from pruning.criteria import Layout
from pruning.masks import PruningMask, apply_masks
from pruning.prune import (get_masks, prunable_layers, prunable_weights, prune_low_magnitude,
                           pruned_weights, restore_masks, strip_pruning)
from pruning.registry import register_prunable
from pruning.regularizers import GroupLasso, add_group_lasso
from pruning.sensitivity import allocate_sparsity, layer_sensitivity
from pruning.shrink import SelectFeatures, shrink
from pruning.summary import summary
from pruning.variational import (KLWarmup, strip_variational, variational_dropout,
                                 variational_masks)

__version__ = "0.5.0"

__all__ = ["GradualPruning", "GroupLasso", "IterativePruning", "KLWarmup", "Layout",
           "PolynomialDecay", "PruningMask", "SelectFeatures", "add_group_lasso",
           "allocate_sparsity", "apply_masks", "get_masks", "layer_sensitivity",
           "prunable_layers", "prunable_weights", "prune_low_magnitude", "pruned_weights",
           "register_prunable", "restore_masks", "shrink", "sparsity", "strip_pruning",
           "strip_variational", "summary", "variational_dropout", "variational_masks"]
