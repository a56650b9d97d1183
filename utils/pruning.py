"""Magnitude pruning for any Keras 3 model built from Dense layers.

    masks = prune(model, "global-sparsity", 0.95, optimizer)   # zero weights (and momentum)
    fit(model, optimizer, config, data, masks=masks)            # pruned weights stay exactly 0

The maths is NumPy in `pruning_utils`; this module applies it to a model's kernels and its SGD
momentum. `GradualSchedule` is Zhu & Gupta's (2017) sparsity ramp, which `utils.training.Trainer`
applies inside its compiled step; `utils.schedules` strings these into one-shot, iterative and
gradual pruning runs. (No maintained library offers this for Keras 3: the TF Model Optimization
Toolkit needs the legacy Keras 2.)
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from utils import pruning_utils


def dense_kernels(model):
    """Kernel variables of the model's Dense layers, input to output."""
    return [layer.kernel for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def layer_name(kernel_path):
    """'network_dense/fc1/kernel' -> 'fc1'."""
    return kernel_path.split("/")[-2]


def compute_masks(model, criterion, value, previous=None):
    """{kernel path: bool mask} by a `pruning_utils.CRITERIA` criterion, nested in `previous`.

    Raises ValueError if a layer would lose every weight.
    """
    kernels = dense_kernels(model)
    old = None if previous is None else [previous[k.path] for k in kernels]
    masks = pruning_utils.criterion_masks([k.numpy() for k in kernels], criterion, value, old)
    pruning_utils.check_masks(masks, [layer_name(k.path) for k in kernels], criterion, value)
    return {k.path: m for k, m in zip(kernels, masks)}


def apply_masks(model, masks, optimizer=None):
    """Zero the masked kernel entries and, if given, their SGD momentum.

    The momentum must be zeroed too: a pruned weight with leftover momentum would move away
    from zero on the next step even with a zero gradient.
    """
    momentums = momentum_of(model, optimizer)
    for kernel in dense_kernels(model):
        if kernel.path in masks:
            mask = masks[kernel.path].astype(np.float32)
            kernel.assign(kernel.numpy() * mask)
            if kernel.path in momentums:
                momentums[kernel.path].assign(momentums[kernel.path].numpy() * mask)


def prune(model, criterion="threshold", value=0.03, optimizer=None, previous=None):
    """Compute masks by `criterion` and apply them to the model (and momentum); the masks."""
    masks = compute_masks(model, criterion, value, previous)
    apply_masks(model, masks, optimizer)
    return masks


def momentum_of(model, optimizer):
    """{trainable variable path: its momentum slot} for an SGD optimizer with momentum, else {}."""
    if optimizer is None or not getattr(optimizer, "momentums", None):
        return {}
    return dict(zip((v.path for v in model.trainable_variables), optimizer.momentums))


def sparsity_lines(masks):
    """Printable per-layer and total sparsity of {kernel path: mask}."""
    lines = []
    for path, mask in masks.items():
        nnz = int(np.count_nonzero(mask))
        lines.append(f"  {layer_name(path):6s} {str(mask.shape):12s} {nnz:9,d} kept  "
                     f"sparsity {pruning_utils.sparsity(mask):6.1%}")
    kept = sum(int(np.count_nonzero(m)) for m in masks.values())
    total_sparsity = pruning_utils.sparsity(list(masks.values()))
    lines.append(f"  {'total':6s} {'':12s} {kept:9,d} kept  sparsity {total_sparsity:6.1%}")
    return lines


@dataclasses.dataclass(frozen=True)
class GradualSchedule:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f)(1 - (t - t0)/(T - t0))^3 for t0 <= t <= T.

    The masks are recomputed every `frequency` steps from step t0 (`begin_step`), and at T
    (`end_step`) so that the final sparsity is always reached, by `criterion` ("layer-sparsity"
    or "global-sparsity") at sparsity s_t; they only ever shrink, and after T they stay fixed
    while training goes on.
    """
    final_sparsity: float
    end_step: int
    initial_sparsity: float = 0.0
    begin_step: int = 0
    frequency: int = 100
    criterion: str = "global-sparsity"

    def __post_init__(self):
        if self.criterion not in ("layer-sparsity", "global-sparsity"):
            raise ValueError(f"gradual pruning needs criterion layer-sparsity or global-sparsity, "
                             f"got {self.criterion!r}")
        if not 0 <= self.initial_sparsity <= self.final_sparsity < 1:
            raise ValueError(f"need 0 <= initial_sparsity <= final_sparsity < 1, got "
                             f"{self.initial_sparsity} and {self.final_sparsity}")
        if self.end_step <= self.begin_step or self.frequency < 1:
            raise ValueError(f"need end_step > begin_step and frequency >= 1, got "
                             f"{self.begin_step}, {self.end_step}, {self.frequency}")

    def sparsity(self, step):
        """Target sparsity at `step` (a Python number or a scalar tensor)."""
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        if isinstance(progress, tf.Tensor):
            progress = tf.clip_by_value(tf.cast(progress, tf.float32), 0.0, 1.0)
        else:
            progress = min(max(progress, 0.0), 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * \
            (1.0 - progress) ** 3

    def is_update_step(self, step):
        """Whether masks are recomputed at `step` (a scalar int tensor)."""
        return (((step >= self.begin_step) & (step <= self.end_step)
                 & ((step - self.begin_step) % self.frequency == 0)) | (step == self.end_step))

    def masks(self, kernels, step):
        """New float masks of `kernels` (tensors) for `step`, inside a compiled step.

        The TensorFlow twin of `pruning_utils.{layer,global}_sparsity_masks`: keep the
        k largest magnitudes via `tf.math.top_k` (ties at the cut may keep a few more).
        """
        sparsity = self.sparsity(step)
        magnitudes = [tf.abs(k) for k in kernels]
        if self.criterion == "layer-sparsity":
            return [_keep_top(m, tf.reshape(m, [-1]), sparsity) for m in magnitudes]
        flat = tf.concat([tf.reshape(m, [-1]) for m in magnitudes], 0)
        return [_keep_top(m, flat, sparsity) for m in magnitudes]


def _keep_top(magnitude, population, sparsity):
    """1.0 where `magnitude` is among the round((1 - sparsity) x size) largest of `population`."""
    size = tf.size(population)
    keep = tf.maximum(1, tf.cast(tf.round((1.0 - sparsity) * tf.cast(size, tf.float32)), tf.int32))
    cut = tf.math.top_k(population, k=keep, sorted=True).values[-1]
    return tf.cast((magnitude >= cut) & (magnitude > 0), magnitude.dtype)
