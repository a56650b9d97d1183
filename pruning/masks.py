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

One write escapes the constraint: with `use_ema=True`, `fit` ends by copying the moving averages
into the weights (`finalize_variable_values`), and the average of a pruned weight is not zero
(the average is taken before the constraint). `hold(model)` wraps that copy on the model's
optimizer so that the masks are applied after it; every call of the package that sets or reads
masks on a model calls it, and so does a `PruningMask` when a train step is traced, for a model
compiled after it was pruned. Values written by `set_weights` / `load_weights` under a mask are
zeroed by the next optimizer step (`apply_masks` zeroes them at once).

A compiled step reads a mask variable's current value on TensorFlow and PyTorch; on JAX it is a
constant of the traced step unless it is among the step's state, so whoever gives a weight a new
mask retraces the model's train function (`pruning.prune.retrace`), and `GradualPruning` carries
the masks it changes during `fit` in the optimizer's state.
"""
import base64
import weakref
import zlib

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="pruning")
class PruningMask(keras.constraints.Constraint):
    """Constraint `w -> where(mask, w, 0)` (a NaN under the mask becomes 0 too).

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
        self.owner = None  # a weak reference to the model, set by `hold`: not saved
        self._checked = None  # id of the optimizer `hold` last saw

    def __call__(self, w):
        model = self.owner() if self.owner is not None else None
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and id(optimizer) != self._checked:  # once per optimizer
            hold(model)
            self._checked = id(optimizer)
        w = keras.ops.convert_to_tensor(w)
        return keras.ops.where(keras.ops.cast(self.mask, "bool"), w, keras.ops.zeros_like(w))

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
        mask = variable.constraint.numpy()
        values = keras.ops.convert_to_numpy(variable.value)
        if not (values[~mask] == 0).all():  # a NaN too
            variable.assign(np.where(mask, values, 0).astype(values.dtype))
    return model


def innermost(optimizer):
    """The optimizer that runs the update and the constraints (inside a LossScaleOptimizer)."""
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def hold(model):
    """Make every way `model`'s optimizer writes the weights keep its masks: with EMA, the masks
    are applied after `fit`'s final copy of the averages. Idempotent; also remembers `model` in
    its masks, so that a model compiled later is checked when its train step is traced."""
    for variable in masked_variables(model):
        if variable.constraint.owner is None:
            variable.constraint.owner = weakref.ref(model)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(innermost(optimizer), "use_ema", False):
        return
    inner = innermost(optimizer)
    if getattr(inner, "_pruning_holds", None) is not None:
        inner._pruning_holds.add(model)
        return
    # Why an instance attribute: Keras calls `finalize_variable_values` at the end of every fit
    # and offers no other hook after it for a model that trains without our callbacks.
    finalize = inner.finalize_variable_values
    inner._pruning_holds = weakref.WeakSet([model])

    def finalize_then_mask(var_list):
        finalize(var_list)
        for held in list(inner._pruning_holds):
            apply_masks(held)

    inner.finalize_variable_values = finalize_then_mask
