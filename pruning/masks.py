"""Pruning masks as Keras constraints: what keeps a pruned weight at exactly zero.

Keras 3 optimizers apply each variable's `constraint` right after its update, inside the compiled
step (`BaseOptimizer.apply`). A constraint that multiplies a kernel by its 0/1 mask therefore holds
every pruned weight at zero under any optimizer (momentum, Adam, AdamW's decay), with `jit_compile`
on or off, any `steps_per_execution` and under `tf.distribute`, while `model.fit` stays untouched.
A kept weight's update is the same as with masked gradients, because Keras' optimizers work
element-wise (global-norm gradient clipping, `global_clipnorm`, would also count the pruned
weights' gradients). The mask travels in the layer's config, so `model.save` / `load_model` and
`keras.models.clone_model` keep it.
"""
import base64
import numbers
import zlib

import keras
import numpy as np

from pruning import criteria

# Prunable layer kinds and the constructor argument that holds their kernel's constraint.
PRUNABLE = {
    **{cls: "kernel_constraint" for cls in (
        keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
        keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)},
    keras.layers.DepthwiseConv1D: "depthwise_constraint",
    keras.layers.DepthwiseConv2D: "depthwise_constraint",
}


@keras.saving.register_keras_serializable(package="pruning")
class PruningMask(keras.constraints.Constraint):
    """Kernel constraint `w -> w * mask`; the mask is a non-trainable variable so that a compiled
    step can shrink it (`GradualPruning`) and every replica of a tf.distribute strategy sees the
    same one ("only_first_replica": the replicas compute identical masks, the first one's is kept).
    Saved in the config, bit-packed, because Keras saves no constraint's variables: the config is
    what rebuilds the layer on load.
    """

    def __init__(self, mask, shape=None):
        if isinstance(mask, str):  # from get_config: zlib-compressed packed bits, base64
            bits = np.unpackbits(np.frombuffer(zlib.decompress(base64.b64decode(mask)), np.uint8))
            mask = bits[:int(np.prod(shape))].reshape(shape)
        self.mask = keras.Variable(np.asarray(mask, np.float32), trainable=False,
                                   aggregation="only_first_replica", name="pruning_mask")
        self.update = None  # set by GradualPruning: recomputes the masks inside the train step

    def __call__(self, w):
        if self.update is not None:
            self.update()
        return w * self.mask

    def numpy(self):
        """The mask as a bool array."""
        return np.asarray(self.mask.numpy()) > 0

    def get_config(self):
        packed = zlib.compress(np.packbits(self.numpy().ravel()).tobytes())
        return {"mask": base64.b64encode(packed).decode("ascii"), "shape": list(self.mask.shape)}


def prunable_layers(model):
    """Every layer of `model` (nested models included) whose kernel can be pruned, in order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += prunable_layers(layer)
        elif isinstance(layer, tuple(PRUNABLE)):
            found.append(layer)
    return found


def _constraint_attribute(layer):
    return next(attr for cls, attr in PRUNABLE.items() if isinstance(layer, cls))


def pruned_layers(model):
    """{layer name: layer} of the layers that carry a `PruningMask`."""
    return {l.name: l for l in prunable_layers(model)
            if isinstance(l.kernel.constraint, PruningMask)}


def get_masks(model):
    """{layer name: bool mask} of every pruned layer, as they are now."""
    return {name: l.kernel.constraint.numpy() for name, l in pruned_layers(model).items()}


def _check_value(criterion, value, argument):
    name = criteria.VALUE_NAME[criterion]
    number = isinstance(value, numbers.Real)  # NumPy scalars included
    if name == "sparsity":
        ok = number and 0 <= value < 1
        allowed = "in [0, 1)"
    else:
        ok = number and np.isfinite(value) and value >= 0
        allowed = "a finite number >= 0"
    if not ok:
        raise ValueError(f"{argument} (the {name} of criterion {criterion!r}) must be {allowed}, "
                         f"got {value!r}")


def _select(model, layers):
    """The prunable layers named by `layers` (all of them when None), checked."""
    candidates = prunable_layers(model)
    names = [l.name for l in candidates]
    if not candidates:
        raise ValueError(f"model {model.name!r} has no prunable layer (one of "
                         f"{sorted(c.__name__ for c in PRUNABLE)}): nothing to prune")
    if len(set(names)) != len(names):
        raise ValueError(f"model {model.name!r} has prunable layers with the same name: {names}")
    if layers is None:
        chosen = candidates
    else:
        unknown = [n for n in layers if n not in names]
        if unknown or not layers:
            raise ValueError(f"layers: {unknown or 'an empty list'} not among the prunable layers "
                             f"of model {model.name!r}: {names}")
        chosen = [l for l in candidates if l.name in layers]
    unbuilt = [l.name for l in chosen if not l.built]
    if unbuilt:
        raise ValueError(f"model: layers {unbuilt} are not built yet; build the model first "
                         f"(give it a keras.Input, or call it once on a batch)")
    return chosen


def prune_low_magnitude(model, criterion="global-sparsity", value=0.9, layers=None,
                        block=criteria.UNSTRUCTURED):
    """Zero the smallest-magnitude weights of `model`'s kernels and keep them zero from then on.

    Args:
      model: a built Keras 3 model (Sequential, functional or subclassed). Its Dense, Conv*D,
        Conv*DTranspose and DepthwiseConv*D kernels are pruned; biases never are.
      criterion: "threshold" (prune |w| < value), "std" (|w| < value x the layer's std, Han et
        al. 2015), "layer-sparsity" (each layer loses the fraction `value`) or
        "global-sparsity" (one magnitude cut over all the chosen layers).
      value: the criterion's number, or {layer name: number} for a per-layer target (not with
        global-sparsity); the dict's keys then choose the layers.
      layers: names of the layers to prune (default: every prunable layer).
      block: (outputs, inputs) or "1x4": each layer keeps as many weights as the criterion
        would, in whole blocks of its kernel seen as [inputs, outputs], those of largest mean
        |w| (`criteria.in_blocks`); default unstructured.
    Calling it again prunes further: the new masks are nested in the old ones.

    Returns:
      {layer name: bool mask}, True where a weight is kept.
    """
    criteria.check_criterion(criterion)
    block = criteria.parse_block(block)
    if isinstance(value, dict):
        if criterion == "global-sparsity":
            raise ValueError("value: a per-layer dict needs a per-layer criterion "
                             "(threshold, std or layer-sparsity), not global-sparsity")
        if layers is not None and sorted(layers) != sorted(value):
            raise ValueError(f"layers {sorted(layers)} and the keys of value {sorted(value)} "
                             f"differ")
        layers = list(value)
    chosen = _select(model, layers)
    values = [value[l.name] if isinstance(value, dict) else value for l in chosen]
    for v in values:
        _check_value(criterion, v, "value")
    kernels = [l.kernel.numpy() for l in chosen]
    if isinstance(value, dict):
        masks = [criteria.criterion_masks([k], criterion, v, block=block)[0]
                 for k, v in zip(kernels, values)]
    else:
        masks = criteria.criterion_masks(kernels, criterion, value, block=block)
    masks = [m & l.kernel.constraint.numpy() if isinstance(l.kernel.constraint, PruningMask) else m
             for m, l in zip(masks, chosen)]
    criteria.check_masks(masks, [l.name for l in chosen], criterion, value)
    for layer, mask in zip(chosen, masks):
        set_mask(layer, mask)
    return {l.name: m for l, m in zip(chosen, masks)}


def set_mask(layer, mask):
    """Give `layer`'s kernel the bool `mask` (replacing its current one) and zero what it prunes."""
    constraint = layer.kernel.constraint
    if isinstance(constraint, PruningMask):
        constraint.mask.assign(mask.astype(np.float32))  # same variable: compiled steps see it
    elif constraint is not None:
        raise ValueError(f"layer {layer.name!r} already has a kernel constraint "
                         f"({type(constraint).__name__}); pruning would replace it")
    else:
        constraint = PruningMask(mask)
        setattr(layer, _constraint_attribute(layer), constraint)  # in the config: saved
        layer.kernel.constraint = constraint                      # applied by the optimizer
    layer.kernel.assign(layer.kernel.numpy() * mask)


def strip_pruning(model):
    """Remove every `PruningMask` from `model` in place (the zeros stay) and return it: a plain
    Keras model whose config and SavedModel/TFLite export know nothing of pruning."""
    for layer in pruned_layers(model).values():
        setattr(layer, _constraint_attribute(layer), None)
        layer.kernel.constraint = None
    return model


def sparsity_lines(masks):
    """Printable per-layer and total sparsity of {layer name: bool mask}."""
    lines = []
    for name, mask in masks.items():
        nnz = int(np.count_nonzero(mask))
        lines.append(f"  {name:8s} {str(mask.shape):16s} {nnz:9,d} kept  "
                     f"sparsity {criteria.sparsity(mask):6.1%}")
    kept = sum(int(np.count_nonzero(m)) for m in masks.values())
    total_sparsity = criteria.sparsity(list(masks.values()))
    lines.append(f"  {'total':8s} {'':16s} {kept:9,d} kept  sparsity {total_sparsity:6.1%}")
    return lines
