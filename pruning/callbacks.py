"""Pruning schedules as Keras callbacks: pass them to `model.fit(callbacks=[...])`.

  GradualPruning   Zhu & Gupta (2017): the sparsity rises along a cubic ramp while training; the
                   masks are recomputed inside the compiled train step (keras.ops, so on
                   TensorFlow and JAX), at the optimizer's step count, so `steps_per_execution > 1`
                   changes nothing.
  IterativePruning Han et al. (2015): prune further at the start of chosen epochs.
Both put the sparsity of the pruned weights in the epoch logs (`History`) as "sparsity"; not in
every batch's, which would copy every mask to the host at every step.
"""
import dataclasses
import math
import numbers

import keras
import numpy as np
from keras import ops

from pruning import criteria
from pruning.prune import _check_value, get_masks, prune_low_magnitude, pruned_weights, retrace


def _log_sparsity(model, logs):
    masks = list(get_masks(model).values())
    if logs is not None and masks:
        logs["sparsity"] = criteria.sparsity(masks)


@dataclasses.dataclass(frozen=True)
class PolynomialDecay:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f)(1 - (t - t0)/(T - t0))^3 for t0 <= t <= T.

    t counts optimizer updates (`optimizer.iterations` once step t is done). The masks are
    recomputed after updates t0, t0 + frequency, ... and T, so the final sparsity is reached at
    exactly T; they only ever shrink, and after T they stay fixed while training goes on.

    Example:
      PolynomialDecay(final_sparsity=0.9, end_step=2000, frequency=100)
    """
    final_sparsity: float
    end_step: int
    initial_sparsity: float = 0.0
    begin_step: int = 0
    frequency: int = 100

    def __post_init__(self):
        for name in ("final_sparsity", "initial_sparsity"):
            if not isinstance(getattr(self, name), numbers.Real):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        for name in ("end_step", "begin_step", "frequency"):
            if not isinstance(getattr(self, name), numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not 0 <= self.initial_sparsity <= self.final_sparsity < 1:
            raise ValueError(f"need 0 <= initial_sparsity <= final_sparsity < 1, got "
                             f"initial_sparsity={self.initial_sparsity}, "
                             f"final_sparsity={self.final_sparsity}")
        if not 0 <= self.begin_step < self.end_step:
            raise ValueError(f"need 0 <= begin_step < end_step, got begin_step={self.begin_step}, "
                             f"end_step={self.end_step}")
        if self.frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {self.frequency}")

    def sparsity(self, step):
        """Target sparsity after `step` updates (a Python number or a scalar tensor)."""
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        if isinstance(progress, numbers.Number):
            progress = min(max(progress, 0.0), 1.0)
        else:
            progress = ops.clip(ops.cast(progress, "float32"), 0.0, 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * \
            (1.0 - progress) ** 3

    def is_update_step(self, step):
        """Whether the masks are recomputed after `step` updates."""
        return (((step >= self.begin_step) & (step <= self.end_step)
                 & ((step - self.begin_step) % self.frequency == 0)) | (step == self.end_step))


class GradualPruning(keras.callbacks.Callback):
    """Raise the sparsity of the pruned weights along `schedule` (a `PolynomialDecay`) during fit.

    `criterion` is "global-sparsity" (one cut over all pruned weights) or "layer-sparsity";
    `pattern` and `norm` as in `prune_low_magnitude` ("1x4" blocks, "2:4", "units", "inputs").
    `final_sparsities` ({weight key: sparsity}, layer-sparsity only, e.g. from
    `allocate_sparsity`): each weight's own final sparsity, all reached together, each weight at
    every step at the same fraction of its own final as the schedule is of its final_sparsity.
    A model without masks gets dense ones on the weights `layers` chooses (default all) when
    training begins.

    Example:
      schedule = pruning.PolynomialDecay(final_sparsity=0.8, end_step=1000)
      model.fit(x, y, epochs=10, callbacks=[pruning.GradualPruning(schedule)])
    """

    def __init__(self, schedule, criterion="global-sparsity", pattern=None, layers=None,
                 block=None, norm="l1", final_sparsities=None):
        super().__init__()
        if not isinstance(schedule, PolynomialDecay):
            raise ValueError(f"schedule must be a pruning.PolynomialDecay, got {schedule!r}: "
                             f"e.g. GradualPruning(PolynomialDecay(final_sparsity=0.8, "
                             f"end_step=1000))")
        if criterion not in ("layer-sparsity", "global-sparsity"):
            raise ValueError(f"criterion: gradual pruning needs layer-sparsity or "
                             f"global-sparsity, got {criterion!r}")
        if pattern is not None and block is not None:
            raise ValueError("give pattern or block, not both")
        self.schedule, self.criterion, self.layers = schedule, criterion, layers
        self.pattern = criteria.parse_pattern(pattern if block is None else block)
        if norm not in criteria.NORMS:
            raise ValueError(f"norm must be one of {criteria.NORMS}, got {norm!r}")
        self.norm = norm
        if final_sparsities is not None:
            if criterion != "layer-sparsity":
                raise ValueError("final_sparsities: per-weight targets need criterion "
                                 "layer-sparsity")
            if not final_sparsities or not all(0 <= v < 1 for v in final_sparsities.values()):
                raise ValueError(f"final_sparsities must map weight keys to sparsities in "
                                 f"[0, 1), got {final_sparsities!r}")
            if schedule.final_sparsity <= 0:
                raise ValueError("final_sparsities: the schedule's final_sparsity must be > 0, "
                                 "the ramp each weight follows in proportion")
        self.final_sparsities = final_sparsities
        self._tracked = []

    def on_train_begin(self, logs=None):
        done = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations.value))
        if done >= self.schedule.end_step:
            raise ValueError(
                f"GradualPruning: the schedule ends at step {self.schedule.end_step}, but the "
                f"optimizer has made {done} updates already (steps count optimizer.iterations); "
                f"e.g. PolynomialDecay(..., begin_step={done}, end_step={done} + N)")
        if not pruned_weights(self.model):
            prune_low_magnitude(self.model, self.criterion, 0.0, self.layers, self.pattern,
                                norm=self.norm)
        weights = pruned_weights(self.model)
        self._scales = [1.0] * len(weights)
        if self.final_sparsities is not None:
            keys = {w.key for w in weights}
            if set(self.final_sparsities) != keys:
                raise ValueError(f"final_sparsities names {sorted(self.final_sparsities)}, the "
                                 f"pruned weights are {sorted(keys)}")
            self._scales = [self.final_sparsities[w.key] / self.schedule.final_sparsity
                            for w in weights]
        trainable = {id(v) for v in self.model.trainable_variables}
        frozen = [w.key for w in weights if id(w.variable) not in trainable]
        if frozen:
            raise ValueError(f"GradualPruning: {frozen} are not trainable (a frozen layer): the "
                             f"optimizer would never apply their masks; unfreeze them, or "
                             f"prune the others only (layers=)")
        # The optimizer applies the constraints in the order of trainable_variables, after it has
        # updated every variable: the first one recomputes all masks, then each applies its own.
        first = {id(w.variable): w for w in weights}
        first = next(first[id(v)] for v in self.model.trainable_variables if id(v) in first)
        # Not self.model inside the step: on JAX that property syncs the model's state.
        optimizer = self.model.optimizer
        first.mask.update = lambda: self._update(weights, optimizer)
        for weight in weights:
            weight.mask.pattern = str(self.pattern)
        if keras.backend.backend() == "jax":
            # JAX's train step is a pure function of the model's and the optimizer's state: a
            # mask outside that state is a constant of the traced step, and assigning it there is
            # lost. Tracked by the optimizer for this fit, the masks travel in and out of every
            # step (Keras' stateless_apply maps them).
            self._tracked = [w.mask.mask for w in weights]
            for mask in self._tracked:
                optimizer._track_variable(mask)
        retrace(self.model)  # the update inside the step

    def on_train_end(self, logs=None):
        for weight in pruned_weights(self.model):
            weight.mask.update = None
        for mask in self._tracked:  # out of the optimizer: its saved state stays its own
            self.model.optimizer._tracker.untrack(mask)
        self._tracked = []
        retrace(self.model)  # a later fit must not keep pruning

    def _update(self, weights, optimizer):
        step = optimizer.iterations + 1  # the update being applied now
        constraints = [w.mask for w in weights]
        update = self.schedule.is_update_step(ops.cast(step, "int32"))

        def magnitudes():
            found = [ops.abs(w.variable.value) * c.mask for w, c in zip(weights, constraints)]
            if self.pattern.kind == "n:m":  # the N largest of every M, then the cut among them
                found = [m * _n_of_m(c.mask, m, self.pattern.a, self.pattern.b)
                         for m, c in zip(found, constraints)]
            return found

        def cuts(found):
            sparsity = self.schedule.sparsity(step)
            if self.criterion == "layer-sparsity":
                return [_cut(ops.reshape(m, [-1]), sparsity * scale)
                        for m, scale in zip(found, self._scales)]
            flat = ops.concatenate([ops.reshape(m, [-1]) for m in found], 0)
            return [_cut(flat, sparsity)] * len(found)

        def shrink():
            found = magnitudes()
            masks = [ops.cast((m >= cut) & (m > 0), "float32") for m, cut in zip(found, cuts(found))]
            if self.pattern.kind == "block" and self.pattern != criteria.parse_pattern(None):
                block = (self.pattern.a, self.pattern.b)
                masks = [_in_blocks(mask, m, block) for mask, m in zip(masks, found)]
            elif self.pattern.kind in criteria.STRUCTURES:
                masks = [_in_groups(mask, m, self.pattern.kind, self.norm)
                         for mask, m in zip(masks, found)]
            return masks

        # Assigned outside the cond: under tf.distribute a mirrored variable's assignment is a
        # synchronisation point, which cannot sit inside control flow.
        masks = ops.cond(update, shrink,
                         lambda: [ops.convert_to_tensor(c.mask) for c in constraints])
        for c, mask in zip(constraints, masks):
            c.mask.assign(mask)

    def on_epoch_end(self, epoch, logs=None):
        _log_sparsity(self.model, logs)


def _n_of_m(mask, magnitudes, n, m):
    """`criteria.n_of_m`: of every m consecutive inputs of an output unit, the n largest kept."""
    matrix = ops.reshape(magnitudes * mask, [-1, magnitudes.shape[-1]])
    keep = ops.reshape(mask, matrix.shape)
    rows, cols = matrix.shape
    pad = [[0, -rows % m], [0, 0]]
    groups = ops.reshape(ops.pad(matrix, pad), [-1, m, cols])
    rank = ops.argsort(ops.argsort(-groups, axis=1), axis=1)
    chosen = ops.cast(rank < n, "float32") * ops.reshape(ops.pad(keep, pad), [-1, m, cols])
    return ops.reshape(ops.reshape(chosen, [-1, cols])[:rows], mask.shape)


def _in_blocks(mask, magnitudes, block):
    """`criteria.in_blocks` in keras.ops: the blocks of largest mean |w| (pruned weights count as
    0, so a pruned block stays pruned) that hold as many weights as `mask` keeps."""
    outs, ins = block
    matrix = ops.reshape(magnitudes, [-1, magnitudes.shape[-1]])
    rows, cols = matrix.shape
    pad = [[0, -rows % ins], [0, -cols % outs]]
    shape = [(rows + pad[0][1]) // ins, ins, (cols + pad[1][1]) // outs, outs]
    sizes = ops.reshape(ops.convert_to_tensor(criteria.block_sizes(mask.shape, block), "float32"),
                        [-1])
    scores = ops.sum(ops.reshape(ops.pad(matrix, pad), shape), axis=[1, 3])
    scores = ops.reshape(scores, [-1]) / sizes
    order = ops.argsort(-scores)
    sizes = ops.take(sizes, order)
    held = ops.cumsum(sizes) - sizes / 2  # criteria.blocks_holding
    kept = ops.sum(mask)
    count = ops.where(kept > 0, ops.maximum(ops.sum(ops.cast(held < kept, "int32")), 1), 0)
    chosen = (ops.arange(order.shape[0]) < count) & (ops.take(scores, order) > 0)
    keep = ops.scatter(ops.expand_dims(order, 1), ops.cast(chosen, "float32"), [order.shape[0]])
    expanded = ops.repeat(ops.repeat(ops.reshape(keep, shape[::2]), ins, 0), outs, 1)
    return ops.reshape(expanded[:rows, :cols], mask.shape)


def _in_groups(mask, magnitudes, structure, norm):
    """`criteria.in_groups` in keras.ops: the whole groups of largest score (pruned weights count
    as 0, so a pruned group stays pruned) that hold as many weights as `mask` keeps."""
    shape = mask.shape
    axis = criteria.group_axis(shape, structure)
    others = [i for i in range(len(shape)) if i != axis]
    scores = ops.mean(magnitudes if norm == "l1" else magnitudes * magnitudes, axis=others)
    count = ops.round(ops.sum(mask) * shape[axis] / math.prod(shape))  # groups holding as many
    cut = _cut(scores, 1.0 - count / shape[axis])
    keep = ops.cast((scores >= cut) & (scores > 0), "float32")
    return ops.broadcast_to(ops.reshape(keep, [-1 if i == axis else 1 for i in range(len(shape))]),
                            shape)


def _cut(population, sparsity):
    """The smallest magnitude kept when keeping round((1 - sparsity) x size) of `population`
    (non-negative): the k-th largest, found exactly by bisection on the float32 bit patterns.

    For non-negative floats the int32 view orders as the values do, so 31 halvings of [0, 2^31)
    find the largest pattern that at least k entries reach, which is the k-th largest value's.
    Each halving is one fused count over the weights; a sort of LeNet-300-100's 266,200 weights
    cost about one epoch's time in 100 steps (measured), and `top_k` would make XLA recompile the
    step for every new k. Ties at the cut may keep a few more weights than asked.
    """
    size = population.shape[0]
    keep = ops.maximum(1, ops.cast(ops.round((1.0 - sparsity) * size), "int32"))
    bits = ops.view(population, "int32")

    def halve(_, bounds):  # invariant: count(bits >= low) >= keep > count(bits >= high)
        low, high = bounds
        middle = low + (high - low) // 2
        enough = ops.sum(ops.cast(bits >= middle, "int32")) >= keep
        return ops.where(enough, middle, low), ops.where(enough, high, middle)

    low, _ = ops.fori_loop(0, 31, halve, (ops.convert_to_tensor(0, "int32"),
                                          ops.convert_to_tensor(2 ** 31 - 1, "int32")))
    return ops.view(low, "float32")


class IterativePruning(keras.callbacks.Callback):
    """Prune further at the start of chosen epochs: `targets` = {epoch (0-based): value} of
    `criterion` (see `prune_low_magnitude`, also for `layers` and `pattern`); each round's masks
    nest in the previous ones.

    Example:
      rounds = pruning.IterativePruning("layer-sparsity", {0: 0.5, 2: 0.75, 4: 0.9})
      model.fit(x, y, epochs=6, callbacks=[rounds])
    """

    def __init__(self, criterion, targets, layers=None, pattern=None, block=None, norm="l1"):
        super().__init__()
        criteria.check_criterion(criterion)
        if not isinstance(targets, dict) or not targets or any(
                not isinstance(e, (int, np.integer)) or e < 0 for e in targets):
            raise ValueError(f"targets must map epochs (integers >= 0) to values, got {targets!r}")
        for value in targets.values():
            if not isinstance(value, dict):
                _check_value(criterion, value, "a value of targets")
        if pattern is not None and block is not None:
            raise ValueError("give pattern or block, not both")
        self.criterion, self.targets, self.layers = criterion, dict(targets), layers
        self.pattern = criteria.parse_pattern(pattern if block is None else block)
        self.norm = norm
        self.on_prune = None  # called as on_prune(epoch, masks) after each pruning

    def on_epoch_begin(self, epoch, logs=None):
        if epoch in self.targets:
            masks = prune_low_magnitude(self.model, self.criterion, self.targets[epoch],
                                        self.layers, self.pattern, norm=self.norm)
            if self.on_prune is not None:
                self.on_prune(epoch, masks)

    def on_epoch_end(self, epoch, logs=None):
        _log_sparsity(self.model, logs)
