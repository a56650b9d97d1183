"""Magnitude-pruning criteria and patterns, NumPy in and NumPy out: which weights a mask keeps.

Plain arrays of any shape and float dtype (dense kernels, conv kernels), so that every rule can
be checked by hand on tiny examples; the one implementation of every rule, used by one-shot,
iterative and gradual pruning alike (`pruning.prune`, `pruning.callbacks`).

Every criterion can also prune whole blocks (`block`; default (1, 1), single weights). The
criterion then decides how many weights each layer keeps, and the blocks with the largest mean |w|
are kept, as many as hold that number. Why not the criterion on the blocks' scores: a block's mean
is smaller than its largest weight, so a threshold of 0.03 that keeps 4.9% of the MLP's weights
one by one keeps 2.4% in 1x4 blocks, and only 188 of fc2's 262,144 (measured); keeping the counts
makes block pruning comparable with unstructured pruning at the same size.

A block is (outputs, inputs), TFLite's notation for a fully-connected weight [outputs, inputs]:
"1x4" is 4 consecutive inputs of one output unit, the layout of TFLite's fast float32 sparse
kernel (int8's is 1x16). A kernel is read through its `Layout` (each layer kind's is in
`pruning.registry`): its output axes become the columns of a matrix and every other axis, in
order, its rows (`as_matrix`: a Dense kernel [inputs, outputs] as it is, a conv kernel
[kh, kw, cin, cout] as [kh*kw*cin, cout], a transposed conv's [kh, kw, cout, cin] as
[kh*kw*cin, cout], a depthwise kernel [kh, kw, channels, multiplier] as [kh*kw, channels *
multiplier]), so a 1x4 block is 4 consecutive rows of one column; blocks that overhang the
kernel's edge are scored by the weights they hold.

N:M sparsity ("2:4", NVIDIA's sparse tensor cores) keeps, of every M consecutive inputs of one
output unit (M consecutive rows of one column of the [inputs, outputs] matrix), the N largest;
the criterion then prunes further among those, so a sparsity of 1 - N/M or less gives exactly N
of every M, and more prunes the smallest of the survivors.
Structured patterns remove whole groups, so that what stays is a smaller dense layer: "units"
(a Dense layer's output units, a convolution's filters, a depthwise channel, an LSTM unit with
its four gates: the layout's output axes) and "inputs" (a Dense layer's input features, a
convolution's input channels: its input axes). As with blocks, the criterion decides how many
weights each layer keeps, and the groups with the largest norm that hold as many are kept: the
L1 norm (mean |w|) by default, or the L2 norm (`norm="l2"`), which weighs a group's largest
weights more. A pattern is written "unstructured", "OxI" (a block), "N:M", "units" or "inputs"
(`parse_pattern`).
"""
import re
from typing import NamedTuple

import numpy as np

UNSTRUCTURED = (1, 1)


STRUCTURES = ("units", "inputs")


class Pattern(NamedTuple):
    """A parsed pattern: kind "block" with (outputs, inputs), kind "n:m" with (n, m), or a
    structure of STRUCTURES ("units", "inputs"; a and b unused, 0)."""
    kind: str
    a: int
    b: int

    def __str__(self):
        if self.kind in STRUCTURES:
            return self.kind
        if self.kind == "n:m":
            return f"{self.a}:{self.b}"
        return "unstructured" if (self.a, self.b) == UNSTRUCTURED else f"{self.a}x{self.b}"


def parse_pattern(pattern):
    """"unstructured", "1x4", (1, 4), "2:4" or a Pattern -> Pattern, checked.

    >>> str(parse_pattern("2:4")), str(parse_pattern((1, 4))), str(parse_pattern(None))
    ('2:4', '1x4', 'unstructured')
    """
    if isinstance(pattern, Pattern):
        return pattern
    if pattern is None or (isinstance(pattern, str) and pattern.strip() == "unstructured"):
        return Pattern("block", *UNSTRUCTURED)
    if isinstance(pattern, str) and pattern.strip() in STRUCTURES:
        return Pattern(pattern.strip(), 0, 0)
    match = isinstance(pattern, str) and re.fullmatch(r"(\d+):(\d+)", pattern.strip())
    if match:
        n, m = map(int, match.groups())
        if not 1 <= n <= m:
            raise ValueError(f"pattern N:M needs 1 <= N <= M, got {pattern!r}")
        return Pattern("n:m", n, m)
    try:
        return Pattern("block", *parse_block(pattern))
    except ValueError:
        raise ValueError(f"pattern must be 'unstructured', OUTPUTSxINPUTS like '1x4', N:M like "
                         f"'2:4', 'units' or 'inputs', got {pattern!r}") from None


def parse_block(block):
    """"1x4" or (1, 4) -> (1, 4): (outputs, inputs) of a block, checked."""
    text = "x".join(map(str, block)) if isinstance(block, (tuple, list)) else str(block)
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not match or min(map(int, match.groups())) < 1:
        raise ValueError(f"block must be OUTPUTSxINPUTS with positive integers, like 1x4 or "
                         f"1x16, got {block!r}")
    return tuple(int(n) for n in match.groups())


class Layout(NamedTuple):
    """Where a kernel keeps its output units and its input features (`pruning.registry` holds
    each layer kind's; `DENSE` is Keras' [inputs, outputs] and [..., in channels, filters]).

    outputs: the axes whose index together names an output unit (a Dense unit, a conv filter; a
      depthwise kernel's channel and depth multiplier). They are the columns of the matrix that
      blocks and N:M tile (`as_matrix`); every other axis, in order, makes its rows.
    inputs: the axes whose index names an input feature (a Dense input, a conv input channel).
    gates: the outputs hold `gates` blocks of units side by side, unit u being column u of each
      (an LSTM kernel's i, f, c, o: 4; a GRU's z, r, h: 3); "units" keeps or drops all of them.
    Axes may be negative; they count from the end of the kernel's shape.
    """
    outputs: tuple = (-1,)
    inputs: tuple = (-2,)
    gates: int = 1

    def axes(self, rank):
        """(output axes, input axes), non-negative, for a kernel of `rank`."""
        return (tuple(sorted(a % rank for a in self.outputs)),
                tuple(sorted(a % rank for a in self.inputs)))


DENSE = Layout()


def _layout(layout, shape):
    layout = DENSE if layout is None else layout
    if len(shape) < 2:
        raise ValueError(f"a pattern needs a kernel of rank >= 2, got shape {tuple(shape)}")
    return layout


def _moved(shape, axes):
    """The permutation that puts `axes` last (the others first, in order)."""
    return [a for a in range(len(shape)) if a not in axes] + list(axes)


def as_matrix(weights, layout=None):
    """A kernel as the [rows, output units] matrix that blocks and N:M tile: its output axes
    flattened into the columns, every other axis, in order, into the rows (a conv kernel
    [kh, kw, in, out] is [kh*kw*in, out]; a transposed conv's [kh, kw, out, in] is [kh*kw*in, out]).

    >>> as_matrix(np.arange(6).reshape(3, 2)).tolist()  # Dense [inputs, outputs]: itself
    [[0, 1], [2, 3], [4, 5]]
    >>> as_matrix(np.arange(6).reshape(3, 2), Layout(outputs=(0,), inputs=(1,))).tolist()
    [[0, 2, 4], [1, 3, 5]]
    """
    weights = np.asarray(weights)
    layout = _layout(layout, weights.shape)
    outputs, _ = layout.axes(weights.ndim)
    moved = np.transpose(weights, _moved(weights.shape, outputs))
    columns = int(np.prod([weights.shape[a] for a in outputs]))
    return moved.reshape(-1, columns)


def from_matrix(matrix, shape, layout=None):
    """The kernel of `shape` whose `as_matrix` is `matrix` (its inverse)."""
    layout = _layout(layout, shape)
    outputs, _ = layout.axes(len(shape))
    order = _moved(shape, outputs)
    moved = np.reshape(matrix, [shape[a] for a in order])
    return np.transpose(moved, np.argsort(order))


def _block_sums(matrix, block):
    """Sum of each block of a [rows, outputs] matrix, the edge blocks padded with zeros."""
    outs, ins = block
    pad = ((0, -matrix.shape[0] % ins), (0, -matrix.shape[1] % outs))
    padded = np.pad(matrix, pad)
    return padded.reshape(-1, ins, padded.shape[1] // outs, outs).sum(axis=(1, 3))


def block_sizes(shape, block, layout=None):
    """How many weights of a kernel of `shape` each block holds (fewer at the edges)."""
    return _block_sums(as_matrix(np.ones(shape, np.float32), layout), block)


def block_scores(weights, block, layout=None):
    """Mean |w| of each block: [ceil(rows / block inputs), ceil(outputs / block outputs)]."""
    return (_block_sums(as_matrix(np.abs(weights), layout), block)
            / block_sizes(np.shape(weights), block, layout))


def expand_blocks(block_mask, shape, block, layout=None):
    """A mask over blocks as the mask of a kernel of `shape` (the inverse of `block_scores`)."""
    outs, ins = block
    rows, cols = as_matrix(np.empty(shape, bool), layout).shape
    matrix = np.repeat(np.repeat(block_mask, ins, 0), outs, 1)[:rows, :cols]
    return from_matrix(matrix, shape, layout)


def _layouts(layouts, weights):
    return [None] * len(weights) if layouts is None else list(layouts)


def in_blocks(masks, weights, block, layouts=None):
    """Per layer, the blocks with the largest mean |w| that hold as many weights as `masks` keeps
    (at least one block if the mask keeps any): element-wise masks made block-structured."""
    block = parse_block(block)
    if block == UNSTRUCTURED:
        return masks
    structured = []
    for mask, w, layout in zip(masks, weights, _layouts(layouts, weights)):
        sizes = block_sizes(np.shape(w), block, layout)
        order = np.argsort(-block_scores(w, block, layout).ravel(), kind="stable")  # ties: first
        count = blocks_holding(sizes.ravel()[order], np.count_nonzero(mask))
        kept = np.zeros(sizes.size, bool)
        kept[order[:count]] = True
        structured.append(expand_blocks(kept.reshape(sizes.shape), np.shape(w), block, layout))
    return structured


def blocks_holding(sizes, kept):
    """How many blocks of `sizes` weights each, in the order they are kept, hold about `kept`
    weights: every block of which at least half fits; one at least, unless `kept` is 0.

    Counting weights, not blocks: the blocks at a kernel's edge hold fewer (157 inputs in 1x4
    blocks: the last holds one), and a count of blocks taken as kept / 4 keeps too few weights
    each time a schedule recomputes the masks (measured: gradual pruning to 50% ended at 95%).
    """
    held = np.cumsum(sizes) - np.asarray(sizes) / 2
    return max(int(np.sum(held < kept)), 1) if kept else 0


NORMS = ("l1", "l2")


def group_order(shape, structure, layout=None):
    """(permutation, [members, groups] shape): `np.transpose(kernel, permutation).reshape(...)`
    puts each group of `structure` in a column: an output unit (all its gates) for "units", an
    input feature for "inputs". `as_groups` and `from_groups` use it, and `GroupLasso` in
    keras.ops."""
    if structure not in STRUCTURES:
        raise ValueError(f"a structure is one of {STRUCTURES}, got {structure!r}")
    layout = _layout(layout, shape)
    outputs, inputs = layout.axes(len(shape))
    axes = outputs if structure == "units" else inputs
    order = _moved(shape, axes)
    count = int(np.prod([shape[a] for a in axes]))
    if structure == "units" and layout.gates > 1:
        # [others, gates * units] -> [others, gates, units]: unit u is column u of every gate
        order = order[:len(order) - len(axes)] + list(axes)
        count //= layout.gates
    return order, (-1, count)


def as_groups(weights, structure, layout=None):
    """The kernel as [members, groups]: each column one group of `structure` (`group_order`)."""
    order, shape = group_order(np.shape(weights), structure, layout)
    return np.transpose(weights, order).reshape(shape)


def from_groups(groups_, shape, structure, layout=None):
    """The kernel of `shape` whose `as_groups` is `groups_` (its inverse)."""
    order, _ = group_order(shape, structure, layout)
    return np.transpose(np.reshape(groups_, [shape[a] for a in order]), np.argsort(order))


def groups(shape, structure, layout=None):
    """The group of every entry of a kernel of `shape`: its output unit (filter) for "units", its
    input feature (input channel) for "inputs".

    >>> groups((2, 3), "units").tolist(), groups((2, 3), "inputs").tolist()
    ([[0, 1, 2], [0, 1, 2]], [[0, 0, 0], [1, 1, 1]])
    >>> groups((1, 4), "units", Layout(gates=2)).tolist()  # two gates of two units
    [[0, 1, 0, 1]]
    """
    members, count = as_groups(np.empty(shape), structure, layout).shape
    return from_groups(np.broadcast_to(np.arange(count), (members, count)), shape, structure,
                       layout)


def group_scores(weights, structure, norm="l1", layout=None):
    """Each group's score: its L1 norm (sum |w|) or L2 norm (sqrt(sum w^2)), over its size, so
    that a mean |w| (l1) or a root-mean-square (l2); the groups of one kernel are of one size.

    >>> group_scores(np.array([[3., 0.], [4., 1.]]), "units", "l2").tolist()  # 5/sqrt(2) ...
    [3.5355339059327378, 0.7071067811865476]
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    w = as_groups(np.asarray(weights, np.float64), structure, layout)
    return np.abs(w).mean(axis=0) if norm == "l1" else np.sqrt((w * w).mean(axis=0))


def in_groups(masks, weights, structure, norm="l1", layouts=None):
    """Per layer, the whole groups (`groups`) with the largest score (`group_scores`) that hold
    as many weights as `masks` keeps (at least one group if the mask keeps any).

    >>> w = np.array([[.1, .5, .2], [.1, .4, .3]])
    >>> in_groups([np.abs(w) > .35], [w], "units")[0].astype(int).tolist()  # 2 kept: 1 unit
    [[0, 1, 0], [0, 1, 0]]
    """
    structured = []
    for mask, w, layout in zip(masks, weights, _layouts(layouts, weights)):
        scores = group_scores(w, structure, norm, layout)
        kept = int(np.count_nonzero(mask))
        count = max(1, round(kept * len(scores) / np.size(w))) if kept else 0
        members = np.size(w) // len(scores)
        keep = np.broadcast_to(_keep_largest(scores, count), (members, len(scores)))
        structured.append(from_groups(keep, np.shape(w), structure, layout))
    return structured


def n_of_m(masks, weights, n, m, layouts=None):
    """Per layer, of every `m` consecutive rows of one output unit (`as_matrix`: inputs of a
    Dense unit, taps x input channels of a conv filter), the `n` largest |w| among the weights
    `masks` keeps (ties broken by position); a short last group keeps at most `n`.

    >>> n_of_m([np.ones((4, 1), bool)], [np.array([[.1], [-.4], [.3], [.2]])], 2, 4)[0].ravel()
    array([False,  True,  True, False])
    """
    structured = []
    for mask, w, layout in zip(masks, weights, _layouts(layouts, weights)):
        matrix = np.abs(as_matrix(w, layout))
        keep = as_matrix(np.asarray(mask, bool), layout)
        rows, cols = matrix.shape
        pad = ((0, -rows % m), (0, 0))
        grouped = np.pad(matrix * keep, pad).reshape(-1, m, cols)
        rank = np.argsort(np.argsort(-grouped, axis=1, kind="stable"), axis=1, kind="stable")
        chosen = (rank < n) & np.pad(keep, pad).reshape(-1, m, cols)
        structured.append(from_matrix(chosen.reshape(-1, cols)[:rows], np.shape(w), layout))
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
    """Mask of the `keep` largest entries (ties broken by position, so exactly `keep` survive;
    a NaN is smallest): the first `keep` of a stable descending sort, found by a partition
    around the keep-th largest value instead, in linear time (a sort of a 784x300 kernel cost
    12 ms, most of a GradualPruning update)."""
    flat = magnitudes.ravel()
    flat = np.where(np.isnan(flat), -1, flat)  # magnitudes are >= 0: NaN goes last
    if keep >= flat.size:
        return np.ones(magnitudes.shape, bool)
    if keep <= 0:
        return np.zeros(magnitudes.shape, bool)
    cut = np.partition(flat, flat.size - keep)[flat.size - keep]  # the keep-th largest
    mask = flat > cut
    mask[np.flatnonzero(flat == cut)[:keep - np.count_nonzero(mask)]] = True
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


def criterion_masks(weights, criterion, value, previous=None, pattern=UNSTRUCTURED, norm="l1",
                    layouts=None):
    """Masks of `weights` (a list of arrays of any float dtype) by a named criterion, in
    `pattern` (blocks, N:M or a structure, whose groups are scored by `norm`) along each
    weight's `layouts` entry (default `DENSE`); ANDed with `previous` if given, so that repeated
    pruning only removes weights, and a previously pruned weight counts as 0. With N:M the
    criterion sees the entries N:M drops as zeros (so `std` measures them too). Ties are broken
    by position, so the same weights give the same masks on every backend and dtype."""
    check_criterion(criterion)
    pattern, rule = parse_pattern(pattern), CRITERIA[criterion][0]
    if previous is not None:
        weights = [np.where(p, w, 0) for w, p in zip(weights, previous)]
    if pattern.kind == "n:m":
        kept = previous or [np.ones(np.shape(w), bool) for w in weights]
        chosen = n_of_m(kept, weights, pattern.a, pattern.b, layouts)
        masks = [m & c for m, c in zip(rule([w * c for w, c in zip(weights, chosen)], value),
                                      chosen)]
    elif pattern.kind in STRUCTURES:
        masks = in_groups(rule(weights, value), weights, pattern.kind, norm, layouts)
    else:
        masks = in_blocks(rule(weights, value), weights, (pattern.a, pattern.b), layouts)
    if previous is not None:
        masks = [m & p for m, p in zip(masks, previous)]
    return masks


def check_masks(masks, names, criterion="threshold", value=None):
    """Raise ValueError when a mask removes every weight of a matrix: the network would be dead.

    The message names the criterion's value (threshold, quality or sparsity) that went too far.
    """
    value_name = VALUE_NAME[criterion]
    for name, mask in zip(names, masks):
        if not mask.any():
            raise ValueError(f"{criterion} pruning at {value_name} {value} removes every weight "
                             f"of {name}: choose a smaller {value_name}")


def sparsity(masks):
    """Fraction of pruned (zero) entries of one mask or of a list of masks together.

    >>> sparsity([np.array([True, False]), np.array([False, False])])
    0.75
    """
    masks = masks if isinstance(masks, (list, tuple)) else [masks]
    return float(1.0 - sum(np.count_nonzero(m) for m in masks) / sum(m.size for m in masks))
