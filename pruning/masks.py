"""The pruning mask: a Keras constraint, which is what keeps a pruned weight at exactly zero.

A *mask* is a bool array of a weight's shape, True where the weight is kept; a `PruningMask` is
the constraint that holds one.

Keras 3 optimizers apply each variable's `constraint` right after its update, inside the compiled
step (`BaseOptimizer.apply`, on every backend). A constraint that keeps a weight where its mask
is True and writes 0 elsewhere therefore holds every pruned weight at zero under any optimizer
(momentum, Adam, AdamW's decay), loss scaling and gradient accumulation (the constraint runs at
every step), with `jit_compile` on or off, any `steps_per_execution` and under `tf.distribute`,
while `model.fit` stays untouched. A kept weight's update is the same as with masked gradients,
because Keras' optimizers work element-wise (global-norm clipping, `global_clipnorm`, would also
count the pruned weights' gradients).

Two writes escape the constraint, both of EMA's moving averages (`use_ema=True`), where the
average of a pruned weight is not zero (it is taken before the constraint): `fit` ends by
copying the averages into the weights (`finalize_variable_values`), and Keras' `SwapEMAWeights`
callback swaps them in for validation, `predict` and (`swap_on_epoch`) the other callbacks of an
epoch's end, such as `ModelCheckpoint`. Importing the package wraps that method of
`keras.optimizers.Optimizer` and the callback's hooks that swap the averages in, once, so that
every weight under a `PruningMask` is masked after the copy: on any model, compiled, cloned or
loaded before or after pruning, with no call of the package needed. Values written by
`set_weights` / `load_weights` under a mask are zeroed by the next optimizer step (`apply_masks`
zeroes them at once).

A compiled step reads a mask variable's current value on TensorFlow and PyTorch; on JAX it is a
constant of the traced step unless it is among the step's state, so whoever gives a weight a new
mask retraces the model's train function (`pruning.prune.retrace`), and `GradualPruning` carries
the masks it changes during `fit` in the optimizer's state.
"""
import base64
import sys
import zlib

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="pruning")
class PruningMask(keras.constraints.Constraint):
    """Constraint `w -> w * mask`.

    A product, not `where(mask, w, 0)`: the same zeros, but PyTorch's CPU `where` costs 4-5x a
    product (measured on a 784x300 kernel: 470 against 100 microseconds a step, which made a
    pruned LeNet-300-100 step 1.13x an unpruned one), and without XLA TensorFlow's and JAX's
    cost 2-3x. As in tfmot and `torch.nn.utils.prune`, a weight that training made NaN stays
    NaN under the mask: the run has diverged, kept weights alike.

    The mask is a non-trainable variable, so that a schedule can change it between steps without
    a new constraint, and every replica of a tf.distribute strategy sees the same one
    ("only_first_replica": the replicas compute identical masks, the first one's is kept). It is
    saved in the config, bit-packed, because Keras saves no constraint's variables: the config is
    what rebuilds the layer on `load_model` and `clone_model`. `pattern` ("unstructured", "1x4",
    "2:4", "units", "inputs") records how it was made, for `pruning.summary`.

    Example:
      layer.kernel.constraint = PruningMask(np.abs(layer.kernel.numpy()) > 0.1)
    (`prune_low_magnitude` does this, and retraces the train step.)
    """

    def __init__(self, mask, shape=None, pattern="unstructured"):
        if isinstance(mask, str):  # from get_config: zlib-compressed packed bits, base64
            bits = np.unpackbits(np.frombuffer(zlib.decompress(base64.b64decode(mask)), np.uint8))
            mask = bits[:int(np.prod(shape))].reshape(shape)
        self.mask = keras.Variable(np.asarray(mask, np.float32), trainable=False,
                                   aggregation="only_first_replica", name="pruning_mask")
        self.pattern = str(pattern)

    def __call__(self, w):
        w = keras.ops.convert_to_tensor(w)
        return keras.ops.multiply(w, keras.ops.cast(self.mask, w.dtype))

    def numpy(self):
        """The mask as a bool array."""
        return np.asarray(keras.ops.convert_to_numpy(self.mask.value)) > 0

    def get_config(self):
        packed = zlib.compress(np.packbits(self.numpy().ravel()).tobytes())
        return {"mask": base64.b64encode(packed).decode("ascii"), "shape": list(self.mask.shape),
                "pattern": self.pattern}


def masked_variables(model):
    """The variables of `model` that a `PruningMask` holds (a variable shared by two layers
    counts once)."""
    found = {id(v): v for v in model.weights if isinstance(v.constraint, PruningMask)}
    return list(found.values())


def apply_masks(model):
    """Zero, now, every weight of `model` under a mask (after `set_weights`, `load_weights` or a
    user's own writes); returns `model`."""
    for variable in masked_variables(model):
        _zero_masked(variable)
    return model


def _zero_masked(variable):
    """Zero what `variable` holds under its PruningMask, if anything (a NaN too)."""
    mask = variable.constraint.numpy()
    values = keras.ops.convert_to_numpy(variable.value)
    if not (values[~mask] == 0).all():
        variable.assign(np.where(mask, values, 0).astype(values.dtype))


def innermost(optimizer):
    """The optimizer that runs the update and the constraints (inside a LossScaleOptimizer)."""
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def _masked_after(finalize):
    """`Optimizer.finalize_variable_values`, then every variable of its `var_list` under a
    `PruningMask` masked: EMA's final copy of the averages, the one write no constraint sees.

    Why the class and not each optimizer: Keras offers no hook after that copy, and the
    optimizer of a model loaded, cloned or compiled after pruning never passes through this
    package; the variables themselves say whether they are masked."""
    def finalize_variable_values(self, var_list):
        failed = sys.exc_info()[1] is not None  # called from a fit's `finally`, as it fails?
        finalize(self, var_list)
        for variable in var_list:
            try:
                if self.use_ema and keras.backend.backend() == "jax":
                    # Keras 3.15 leaves the weight and its average one JAX buffer, which the
                    # next compiled fit donates twice ("Attempt to donate the same buffer
                    # twice"): a copy
                    variable.assign(keras.ops.copy(variable.value))
                if isinstance(getattr(variable, "constraint", None), PruningMask):
                    _zero_masked(variable)
            except Exception:
                # A JAX fit whose first step failed leaves its variables without values; an
                # error here would hide the fit's own, which says what went wrong.
                if not failed:
                    raise
    finalize_variable_values.masks = True
    return finalize_variable_values


if not getattr(keras.optimizers.Optimizer.finalize_variable_values, "masks", False):
    keras.optimizers.Optimizer.finalize_variable_values = _masked_after(
        keras.optimizers.Optimizer.finalize_variable_values)


def _masked_after_swap(hook):
    """A hook of `keras.callbacks.SwapEMAWeights` that may swap the averages into the weights,
    then the model's weights under a `PruningMask` masked. Zeroing the swapped-in averages of
    pruned weights is exact: the average of a weight that the constraint holds at zero is zero
    (the callback's swap back then leaves the averages masked, the weights as they were)."""
    def masked(self, *args, **kwargs):
        hook(self, *args, **kwargs)
        apply_masks(self.model)
    masked.masks = True
    return masked


for _hook in ("on_epoch_end", "on_test_begin", "on_predict_begin"):  # where it swaps them in
    if not getattr(getattr(keras.callbacks.SwapEMAWeights, _hook), "masks", False):
        setattr(keras.callbacks.SwapEMAWeights, _hook,
                _masked_after_swap(getattr(keras.callbacks.SwapEMAWeights, _hook)))

del _hook
