"""Per-layer sparsities from each layer's sensitivity to pruning (Han et al. 2015, Section 3.4:
prune the layers that lose least the most), measured on data the caller scores, such as a
validation split: one global cut prunes every layer alike, although a network's first and last
layers cost far more accuracy per weight removed than its large middle ones.

    curves = pruning.layer_sensitivity(model, score, levels=[0.5, 0.8, 0.9, 0.95, 0.98])
    sizes = {w.key: int(np.prod(w.variable.shape)) for w in pruning.prunable_weights(model)}
    sparsities = pruning.allocate_sparsity(curves, sizes, 0.9)   # 90% of all weights
    pruning.prune_low_magnitude(model, "layer-sparsity", sparsities)
"""
import math

import keras
import numpy as np

from pruning import criteria
from pruning.prune import select


def layer_sensitivity(model, score, levels, layers=None):
    """{weight key: [(sparsity, score)]}: `score(model)` (higher is better: a validation
    accuracy) with one weight at a time pruned by magnitude to each of `levels`, the others as
    they are; the first pair is (0, the unpruned score). `layers` chooses the weights as in
    `prune_low_magnitude`. Every weight is put back as it was, whatever happens."""
    if not levels or not all(0 < level < 1 for level in levels):
        raise ValueError(f"levels must be sparsities in (0, 1), got {levels!r}")
    base, curves = float(score(model)), {}
    for weight in select(model, layers):
        original = keras.ops.convert_to_numpy(weight.variable)
        curve = [(0.0, base)]
        try:
            for level in sorted(levels):
                (mask,) = criteria.layer_sparsity_masks([original], level)
                weight.variable.assign(original * mask)
                curve.append((float(level), float(score(model))))
        finally:
            weight.variable.assign(original)
        curves[weight.key] = curve
    return curves


def _sparsity_within(curve, tolerance):
    """The largest sparsity whose score, linear between the measured levels, is within
    `tolerance` of the unpruned one; the curve made non-increasing first (a noisy rise is not a
    gain)."""
    levels, scores = (np.asarray(v, float) for v in zip(*curve))
    drop = scores[0] - np.minimum.accumulate(scores)
    if drop[-1] <= tolerance:
        return float(levels[-1])
    i = int(np.argmax(drop > tolerance))  # the first level beyond: drop[i - 1] <= tolerance
    share = (tolerance - drop[i - 1]) / (drop[i] - drop[i - 1])
    return float(levels[i - 1] + share * (levels[i] - levels[i - 1]))


def allocate_sparsity(curves, sizes, target):
    """{weight key: sparsity} that prunes the fraction `target` of all the weights (`sizes`:
    {key: number of weights}) at the smallest common loss: every weight is pruned as far as its
    `layer_sensitivity` curve stays within one tolerance of its unpruned score, the tolerance
    bisected until the total is the target (met exactly: the last step is shared in proportion).
    Raises ValueError if the target lies beyond the levels measured."""
    if set(curves) != set(sizes):
        raise ValueError(f"curves and sizes must name the same weights, got {sorted(curves)} and "
                         f"{sorted(sizes)}")
    total = sum(sizes.values())

    def overall(tolerance):
        return sum(_sparsity_within(curves[k], tolerance) * sizes[k] for k in curves) / total

    most = overall(math.inf)
    if not 0 <= target <= most:
        raise ValueError(f"target sparsity {target} is outside what the measured levels reach "
                         f"(0 to {most:.4f}): measure higher levels")

    def within(tolerance):
        return {k: _sparsity_within(curves[k], tolerance) for k in curves}

    if overall(0.0) >= target:  # layers that lose nothing up to some level: from no pruning
        below, above = dict.fromkeys(curves, 0.0), within(0.0)
    else:
        low, high = 0.0, max(c[0][1] - min(s for _, s in c) for c in curves.values())
        for _ in range(60):  # the total rises with the tolerance
            middle = (low + high) / 2
            low, high = (middle, high) if overall(middle) < target else (low, middle)
        below, above = within(low), within(high)
    # the exact target: between the two allocations (they differ by a step of the curves)
    reached = [sum(a[k] * sizes[k] for k in curves) / total for a in (below, above)]
    share = (target - reached[0]) / (reached[1] - reached[0]) if reached[1] > reached[0] else 1.0
    return {k: below[k] + share * (above[k] - below[k]) for k in curves}
