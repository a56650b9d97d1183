"""Pruning schedules as Keras callbacks: pass them to `model.fit(callbacks=[...])`.

  GradualPruning   Zhu & Gupta (2017): the sparsity rises along a cubic ramp while training; the
                   masks are recomputed inside the compiled train step, at the optimizer's step
                   count, so `steps_per_execution > 1` changes nothing.
  IterativePruning Han et al. (2015): prune further at the start of chosen epochs.
Both put the current sparsity in the logs (progress bar, `History`) as "sparsity".
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from pruning import criteria
from pruning.masks import get_masks, prune_low_magnitude, pruned_layers


def _log_sparsity(model, logs):
    if logs is not None:
        logs["sparsity"] = criteria.sparsity(list(get_masks(model).values()))


@dataclasses.dataclass(frozen=True)
class PolynomialDecay:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f)(1 - (t - t0)/(T - t0))^3 for t0 <= t <= T.

    t counts optimizer updates (`optimizer.iterations` once step t is done). The masks are
    recomputed after updates t0, t0 + frequency, ... and T, so the final sparsity is reached at
    exactly T; they only ever shrink, and after T they stay fixed while training goes on.
    """
    final_sparsity: float
    end_step: int
    initial_sparsity: float = 0.0
    begin_step: int = 0
    frequency: int = 100

    def __post_init__(self):
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
        if isinstance(progress, tf.Tensor):
            progress = tf.clip_by_value(tf.cast(progress, tf.float32), 0.0, 1.0)
        else:
            progress = min(max(progress, 0.0), 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * \
            (1.0 - progress) ** 3

    def is_update_step(self, step):
        """Whether the masks are recomputed after `step` updates."""
        return (((step >= self.begin_step) & (step <= self.end_step)
                 & ((step - self.begin_step) % self.frequency == 0)) | (step == self.end_step))


class GradualPruning(keras.callbacks.Callback):
    """Raise the sparsity of the pruned layers along `schedule` (a `PolynomialDecay`) during fit.

    The model must have been through `prune_low_magnitude` (sparsity 0 starts dense); `criterion`
    is "global-sparsity" (one cut over all pruned layers) or "layer-sparsity"; with `block`,
    each layer keeps its weights in whole blocks, as many as the cut keeps (`criteria.in_blocks`).
    """

    def __init__(self, schedule, criterion="global-sparsity", block=criteria.UNSTRUCTURED):
        super().__init__()
        if criterion not in ("layer-sparsity", "global-sparsity"):
            raise ValueError(f"criterion: gradual pruning needs layer-sparsity or "
                             f"global-sparsity, got {criterion!r}")
        self.schedule, self.criterion = schedule, criterion
        self.block = criteria.parse_block(block)

    def on_train_begin(self, logs=None):
        layers = list(pruned_layers(self.model).values())
        if not layers:
            raise ValueError("GradualPruning: the model has no pruned layer; call "
                             "prune_low_magnitude(model, ...) first (sparsity 0 starts dense)")
        # The optimizer applies the constraints in the order of trainable_variables, after it has
        # updated every variable: the first one recomputes all masks, then each applies its own.
        kernels = {id(l.kernel): l for l in layers}
        first = next(kernels[id(v)] for v in self.model.trainable_variables if id(v) in kernels)
        first.kernel.constraint.update = lambda: self._update(layers)
        self.model.make_train_function(force=True)  # retrace with the update in the step

    def on_train_end(self, logs=None):
        for layer in pruned_layers(self.model).values():
            layer.kernel.constraint.update = None
        self.model.make_train_function(force=True)  # a later fit must not keep pruning

    def _update(self, layers):
        step = self.model.optimizer.iterations + 1  # the update being applied now
        constraints = [l.kernel.constraint for l in layers]

        def shrink():
            sparsity = self.schedule.sparsity(step)
            magnitudes = [tf.abs(tf.convert_to_tensor(l.kernel)) * c.mask
                          for l, c in zip(layers, constraints)]
            if self.criterion == "layer-sparsity":
                cuts = [_cut(tf.reshape(m, [-1]), sparsity) for m in magnitudes]
            else:
                flat = tf.concat([tf.reshape(m, [-1]) for m in magnitudes], 0)
                cuts = [_cut(flat, sparsity)] * len(magnitudes)
            masks = [tf.cast((m >= cut) & (m > 0), tf.float32) for m, cut in zip(magnitudes, cuts)]
            return masks if self.block == criteria.UNSTRUCTURED else \
                [_in_blocks(mask, m, self.block) for mask, m in zip(masks, magnitudes)]

        # Assigned outside the cond: under tf.distribute a mirrored variable's assignment is a
        # synchronisation point, which cannot sit inside control flow.
        masks = tf.cond(self.schedule.is_update_step(tf.cast(step, tf.int64)), shrink,
                        lambda: [tf.convert_to_tensor(c.mask) for c in constraints])
        for c, mask in zip(constraints, masks):
            c.mask.assign(mask)

    def on_train_batch_end(self, batch, logs=None):
        _log_sparsity(self.model, logs)

    def on_epoch_end(self, epoch, logs=None):
        _log_sparsity(self.model, logs)


def _in_blocks(mask, magnitudes, block):
    """`criteria.in_blocks` in TensorFlow ops, to run inside the compiled train step: the blocks
    of largest mean |w| (pruned weights count as 0) that hold as many weights as `mask` keeps."""
    outs, ins = block
    matrix = tf.reshape(magnitudes, [-1, magnitudes.shape[-1]])
    rows, cols = matrix.shape
    pad = [[0, -rows % ins], [0, -cols % outs]]
    shape = [(rows + pad[0][1]) // ins, ins, (cols + pad[1][1]) // outs, outs]
    scores = tf.reshape(tf.reduce_sum(tf.reshape(tf.pad(matrix, pad), shape), axis=[1, 3])
                        / criteria.block_sizes(mask.shape, block), [-1])
    blocks = tf.round(tf.reduce_sum(mask) / (outs * ins))
    cut = _cut(scores, 1.0 - blocks / tf.cast(tf.size(scores), tf.float32))
    keep = tf.cast((scores >= cut) & (scores > 0), tf.float32)
    expanded = tf.repeat(tf.repeat(tf.reshape(keep, shape[::2]), ins, 0), outs, 1)
    return tf.reshape(expanded[:rows, :cols], mask.shape)


def _cut(population, sparsity):
    """The smallest magnitude kept when keeping round((1 - sparsity) x size) of `population`.

    A sort and a gather, not `tf.math.top_k` or a slice: k changes with the step, and XLA would
    recompile the step for every new k (measured: ~0.7 s a step). Ties at the cut may keep a few
    more weights than asked.
    """
    size = tf.size(population)
    keep = tf.maximum(1, tf.cast(tf.round((1.0 - sparsity) * tf.cast(size, tf.float32)), tf.int32))
    return tf.gather(tf.sort(population, direction="DESCENDING"), keep - 1)


class IterativePruning(keras.callbacks.Callback):
    """Prune further at the start of chosen epochs: `targets` = {epoch (0-based): value} of
    `criterion` (see `prune_low_magnitude`, also for `block`); each round's masks nest in the
    previous ones."""

    def __init__(self, criterion, targets, layers=None, block=criteria.UNSTRUCTURED):
        super().__init__()
        criteria.check_criterion(criterion)
        if not targets or any(not isinstance(e, (int, np.integer)) or e < 0 for e in targets):
            raise ValueError(f"targets must map epochs (integers >= 0) to values, got {targets!r}")
        self.criterion, self.targets, self.layers = criterion, dict(targets), layers
        self.block = criteria.parse_block(block)
        self.on_prune = None  # called as on_prune(epoch, masks) after each pruning

    def on_epoch_begin(self, epoch, logs=None):
        if epoch in self.targets:
            masks = prune_low_magnitude(self.model, self.criterion, self.targets[epoch],
                                        self.layers, self.block)
            if self.on_prune is not None:
                self.on_prune(epoch, masks)

    def on_train_batch_end(self, batch, logs=None):
        _log_sparsity(self.model, logs)

    def on_epoch_end(self, epoch, logs=None):
        _log_sparsity(self.model, logs)
