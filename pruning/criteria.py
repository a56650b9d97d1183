"""Magnitude-pruning criteria, NumPy in and NumPy out: which weights a mask keeps.

Plain arrays of any shape (dense kernels, conv kernels), so that every rule can be checked by
hand on tiny examples. `pruning.masks` applies them to a Keras model.
"""
import numpy as np


def threshold_mask(weights, threshold):
    """Boolean mask keeping the weights with |w| >= threshold (the original's criterion)."""
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    return np.abs(weights) >= threshold


def std_masks(weights, quality):
    """Per layer, keep |w| >= quality x std(w) (Han et al. 2015's quality parameter)."""
    if not np.isfinite(quality) or quality < 0:
        raise ValueError(f"quality must be a finite number >= 0, got {quality}")
    return [np.abs(w) >= quality * np.std(w) for w in weights]


def _check_sparsity(sparsity):
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")


def _keep_largest(magnitudes, keep):
    """Mask of the `keep` largest entries (ties broken by position, so exactly `keep` survive)."""
    mask = np.zeros(magnitudes.size, bool)
    mask[np.argsort(-magnitudes.ravel(), kind="stable")[:keep]] = True
    return mask.reshape(magnitudes.shape)


def layer_sparsity_masks(weights, sparsity):
    """Prune every layer to `sparsity` (fraction of zeros), smallest magnitudes first.

    Each layer keeps round((1 - sparsity) x size) weights, at least one.
    """
    _check_sparsity(sparsity)
    return [_keep_largest(np.abs(w), max(1, round((1 - sparsity) * w.size))) for w in weights]


def global_sparsity_masks(weights, sparsity):
    """One magnitude cut across all layers, keeping round((1 - sparsity) x total) weights.

    Layers with larger weights keep more of them (the small output layer usually keeps most).
    """
    _check_sparsity(sparsity)
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    keep = _keep_largest(flat, max(1, round((1 - sparsity) * flat.size)))
    splits = np.cumsum([w.size for w in weights])[:-1]
    return [m.reshape(w.shape) for m, w in zip(np.split(keep, splits), weights)]


CRITERIA = {  # name -> (function(weights, value), the value's name)
    "threshold": (lambda ws, t: [threshold_mask(w, t) for w in ws], "threshold"),
    "std": (std_masks, "quality"),
    "layer-sparsity": (layer_sparsity_masks, "sparsity"),
    "global-sparsity": (global_sparsity_masks, "sparsity"),
}
VALUE_NAME = {criterion: name for criterion, (_, name) in CRITERIA.items()}


def check_criterion(criterion):
    """Raise ValueError, listing the valid names, if `criterion` is not one of CRITERIA."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r}")


def criterion_masks(weights, criterion, value, previous=None):
    """Masks of `weights` (a list of arrays) by a named criterion; ANDed with `previous` if given,
    so that repeated pruning only ever removes weights."""
    check_criterion(criterion)
    masks = CRITERIA[criterion][0](weights, value)
    if previous is not None:
        masks = [m & p for m, p in zip(masks, previous)]
    return masks


def check_masks(masks, names, criterion="threshold", value=None):
    """Raise ValueError when a mask removes every weight of a layer: the network would be dead.

    The message names the criterion's value (threshold, quality or sparsity) that went too far.
    """
    value_name = VALUE_NAME[criterion]
    for name, mask in zip(names, masks):
        if not mask.any():
            raise ValueError(f"{criterion} pruning at {value_name} {value} removes every weight "
                             f"of layer {name}: choose a smaller {value_name}")


def sparsity(masks):
    """Fraction of pruned (zero) entries of one mask or of a list of masks together."""
    masks = masks if isinstance(masks, (list, tuple)) else [masks]
    return 1.0 - sum(np.count_nonzero(m) for m in masks) / sum(m.size for m in masks)
