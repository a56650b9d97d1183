"""Magnitude-pruning criteria, NumPy in and NumPy out: which weights a mask keeps.

Plain arrays of any shape (dense kernels, conv kernels), so that every rule can be checked by
hand on tiny examples. `pruning.masks` applies them to a Keras model.

Every criterion can also prune whole blocks (`block`; default (1, 1), single weights). The
criterion then decides how many weights each layer keeps, and the blocks with the largest mean |w|
are kept, as many as hold that number. Why not the criterion on the blocks' scores: a block's mean
is smaller than its largest weight, so a threshold of 0.03 that keeps 4.9% of the MLP's weights
one by one keeps 2.4% in 1x4 blocks, and only 188 of fc2's 262,144 (measured); keeping the counts
makes block pruning comparable with unstructured pruning at the same size.

A block is (outputs, inputs), TFLite's notation for a fully-connected weight [outputs, inputs]:
"1x4" is 4 consecutive inputs of one output unit, the layout of TFLite's fast float32 sparse
kernel (int8's is 1x16). A Keras kernel is [inputs, outputs] (a conv kernel [kh, kw, cin, cout]
is seen as [kh*kw*cin, cout]), so a 1x4 block is 4 consecutive rows of one column; blocks that
overhang the kernel's edge are scored by the weights they hold.
"""
import re

import numpy as np

UNSTRUCTURED = (1, 1)


def parse_block(block):
    """"1x4" or (1, 4) -> (1, 4): (outputs, inputs) of a block, checked."""
    text = "x".join(map(str, block)) if isinstance(block, (tuple, list)) else str(block)
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not match or min(map(int, match.groups())) < 1:
        raise ValueError(f"block must be OUTPUTSxINPUTS with positive integers, like 1x4 or "
                         f"1x16, got {block!r}")
    return tuple(int(n) for n in match.groups())


def _as_matrix(weights):
    """A kernel as the [inputs, outputs] matrix the blocks tile."""
    weights = np.asarray(weights)
    return weights.reshape(-1, weights.shape[-1]) if weights.ndim else weights.reshape(1, 1)


def _block_sums(matrix, block):
    """Sum of each block of an [inputs, outputs] matrix, the edge blocks padded with zeros."""
    outs, ins = block
    pad = ((0, -matrix.shape[0] % ins), (0, -matrix.shape[1] % outs))
    padded = np.pad(matrix, pad)
    return padded.reshape(-1, ins, padded.shape[1] // outs, outs).sum(axis=(1, 3))


def block_sizes(shape, block):
    """How many weights of a kernel of `shape` each block holds (fewer at the edges)."""
    return _block_sums(np.ones(_as_matrix(np.empty(shape, bool)).shape, np.float32), block)


def block_scores(weights, block):
    """Mean |w| of each block: [ceil(inputs / block inputs), ceil(outputs / block outputs)]."""
    return _block_sums(np.abs(_as_matrix(weights)), block) / block_sizes(np.shape(weights), block)


def expand_blocks(block_mask, shape, block):
    """A mask over blocks as the mask of a kernel of `shape` (the inverse of `block_scores`)."""
    outs, ins = block
    rows, cols = _as_matrix(np.empty(shape, bool)).shape
    return np.repeat(np.repeat(block_mask, ins, 0), outs, 1)[:rows, :cols].reshape(shape)


def in_blocks(masks, weights, block):
    """Per layer, the blocks with the largest mean |w| that hold as many weights as `masks` keeps
    (at least one block if the mask keeps any): element-wise masks made block-structured."""
    block = parse_block(block)
    if block == UNSTRUCTURED:
        return masks
    size = block[0] * block[1]
    structured = []
    for mask, w in zip(masks, weights):
        kept = int(np.count_nonzero(mask))
        blocks = max(1, round(kept / size)) if kept else 0
        structured.append(expand_blocks(_keep_largest(block_scores(w, block), blocks),
                                        np.shape(w), block))
    return structured


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


def criterion_masks(weights, criterion, value, previous=None, block=UNSTRUCTURED):
    """Masks of `weights` (a list of arrays) by a named criterion, in blocks of `block`
    (`in_blocks`); ANDed with `previous` if given, so that repeated pruning only removes weights."""
    check_criterion(criterion)
    masks = in_blocks(CRITERIA[criterion][0](weights, value), weights, block)
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
