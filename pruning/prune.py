"""Prune a Keras 3 model, read its masks, strip or restore them: the package's one-shot API.

Every call checks everything first and then changes everything, so a refused call leaves the model
as it was; and every change retraces the model's train function, so the next `fit` applies it
even if the model was compiled and fit before (a step traced earlier would not see a new
constraint, and on JAX it holds the masks as constants).
"""
import numbers
import re
import warnings
import weakref

import keras
import numpy as np

from pruning import criteria, registry
from pruning.masks import PruningMask


def prunable_weights(model):
    """The weights `prune_low_magnitude` can prune, as `registry.PrunableWeight`s.

    Example:
      [w.key for w in pruning.prunable_weights(model)]   # ["conv/kernel", "head/kernel", ...]
    """
    return registry.scan(model)[0]


def prunable_layers(model):
    """The layers that hold a prunable weight, in the order of `model.weights`.

    Example:
      [layer.name for layer in pruning.prunable_layers(model)]
    """
    layers = []
    for weight in prunable_weights(model):
        if not any(weight.layer is layer for layer in layers):
            layers.append(weight.layer)
    return layers


def pruned_weights(model):
    """The prunable weights that carry a `PruningMask`.

    Example:
      for w in pruning.pruned_weights(model):
          print(w.key, w.pruning_mask.numpy().mean())   # the fraction kept
    """
    return [w for w in prunable_weights(model) if w.pruning_mask is not None]


def get_masks(model):
    """{weight key ("fc1/kernel"): bool mask, True where a weight is kept} of every pruned weight.

    Example:
      masks = pruning.get_masks(model)
      sparsity = pruning.sparsity(list(masks.values()))
    """
    return {w.key: w.pruning_mask.numpy() for w in pruned_weights(model)}


def _check_value(criterion, value, argument):
    name = criteria.VALUE_NAME[criterion]
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if name == "sparsity":
        ok = number and 0 <= value < 1
        allowed = "in [0, 1)"
    else:
        ok = number and np.isfinite(value) and value >= 0
        allowed = "a finite number >= 0"
    if not ok:
        raise ValueError(f"{argument} (the {name} of criterion {criterion!r}) must be {allowed}, "
                         f"got {value!r}")


def _names(weight):
    return weight.layer.name, weight.key


def select(model, layers=None):
    """The prunable weights of `model` that `layers` chooses, checked; warns about weights of
    rank >= 2 that no registered layer kind holds.

    `layers`: None (all), a list of layer names or weight keys, a compiled regex (matched in full
    against each layer name and weight key) or a predicate `f(layer) -> bool`.
    """
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet; build it first (give it a "
                         f"keras.Input, or call it once on a batch)")
    weights, unpruned = registry.scan(model)
    if unpruned:
        warnings.warn("pruning: not pruned: " + "; ".join(f"{key} ({why})"
                                                         for key, _, why in unpruned),
                      stacklevel=3)
    if not weights:
        raise ValueError(f"model {model.name!r} has no prunable weight (Dense, EinsumDense, "
                         f"Conv*, SeparableConv*, DepthwiseConv*, Embedding, RNN cells, or a "
                         f"layer given to pruning.register_prunable): nothing to prune")
    keys = [w.key for w in weights]
    if len(set(keys)) != len(keys):
        raise ValueError(f"model {model.name!r} has prunable weights with the same path: {keys}; "
                         f"give its layers distinct names")
    if layers is None:
        chosen = weights
    elif isinstance(layers, (str, bytes)):
        raise ValueError(f"layers must be a list of names (['{layers}']), a compiled regex "
                         f"(re.compile({layers!r})) or a predicate, not the string {layers!r}")
    elif isinstance(layers, re.Pattern):
        chosen = [w for w in weights if any(layers.fullmatch(n) for n in _names(w))]
        if not chosen:
            raise ValueError(f"layers: {layers.pattern!r} matches none of the prunable weights "
                             f"of model {model.name!r}: {keys}")
    elif callable(layers):
        chosen = [w for w in weights if layers(w.layer)]
        if not chosen:
            raise ValueError(f"layers: the predicate chose none of the prunable weights of model "
                             f"{model.name!r}: {keys}")
    else:
        try:
            layers = list(layers)
        except TypeError:
            raise ValueError(f"layers must be a list of names, a compiled regex or a predicate, "
                             f"got {layers!r}") from None
        unknown = [n for n in layers if not any(n in _names(w) for w in weights)]
        if unknown or not layers:
            raise ValueError(f"layers: {unknown or 'an empty list'} not among the prunable "
                             f"layers and weights of model {model.name!r}: {keys}")
        chosen = [w for w in weights if any(n in _names(w) for n in layers)]
    return chosen


def retrace(model):
    """Make the model's next train step see the current constraints and masks."""
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def _per_weight(value, weights):
    """The value for each weight: `value`, or value[weight key or layer name]."""
    if not isinstance(value, dict):
        return [value] * len(weights)
    return [value[w.key] if w.key in value else value[w.layer.name] for w in weights]


def check_pattern(pattern, block, norm, caller):
    """The parsed pattern of `pattern` or its deprecated alias `block`, and `norm`, checked."""
    if block is not None:
        if pattern is not None:
            raise ValueError(f"give pattern or block, not both (pattern={pattern!r}, "
                             f"block={block!r})")
        warnings.warn(f"{caller}: block= is deprecated, use pattern= (the same values)",
                      DeprecationWarning, stacklevel=3)
        pattern = block
    if norm not in criteria.NORMS:
        raise ValueError(f"norm must be one of {criteria.NORMS}, got {norm!r}")
    return criteria.parse_pattern(pattern)


def check_frozen(model, weights, caller):
    """Refuse weights the optimizer never updates (a frozen layer): it would never apply their
    masks either, and the next `fit` would not hold their zeros."""
    trainable = {id(v) for v in model.trainable_variables}
    frozen = [w.key for w in weights if id(w.variable) not in trainable]
    if frozen:
        raise ValueError(f"{caller}: {frozen} are not trainable (a frozen layer): the optimizer "
                         f"would never apply their masks; unfreeze them, or prune the others "
                         f"only (layers=) (nothing was pruned)")


def compute_masks(chosen, criterion, value, pattern, norm):
    """The new masks of `chosen` (`registry.PrunableWeight`s) by `criterion` at `value` (one
    number, or one per weight), nested in their current ones: the one place where the package
    turns weights into masks (`criteria.criterion_masks`), for one-shot, iterative and gradual
    pruning alike."""
    kernels = [keras.ops.convert_to_numpy(w.variable.value) for w in chosen]
    previous = [w.pruning_mask.numpy() if w.pruning_mask is not None else np.ones(k.shape, bool)
                for w, k in zip(chosen, kernels)]
    broken = [w.key for w, k, p in zip(chosen, kernels, previous) if (~np.isfinite(k) & p).any()]
    if broken:  # a NaN has no magnitude: ranked anywhere, it would be pruned or kept by chance
        raise ValueError(f"pruning: {broken} hold NaN or infinite weights, which no magnitude "
                         f"criterion can rank: the training diverged? (a lower learning rate)")
    if isinstance(value, (list, tuple)):
        return [criteria.criterion_masks([k], criterion, v, [p], pattern, norm, [w.layout])[0]
                for k, v, p, w in zip(kernels, value, previous, chosen)]
    return criteria.criterion_masks(kernels, criterion, value, previous, pattern, norm,
                                    [w.layout for w in chosen])


def prune_low_magnitude(model, criterion="global-sparsity", value=0.9, *, layers=None,
                        pattern=None, norm="l1", block=None):
    """Zero the smallest-magnitude weights of `model`, in place, and keep them zero from then on;
    returns `model` (as tfmot's does; `pruning.get_masks(model)` gives the masks).

    Args:
      model: a built Keras 3 model (Sequential, functional or subclassed), compiled and trained
        or not: the next `fit` keeps the zeros either way. Its weight matrices are pruned (see
        `pruning.summary` for which); biases and normalisation weights never are.
      criterion: "threshold" (prune |w| < value), "std" (|w| < value x the weight's std, Han et
        al. 2015), "layer-sparsity" (each weight loses the fraction `value`) or
        "global-sparsity" (one magnitude cut over all the chosen weights).
      value: the criterion's number, or {layer name or weight key: number} for a per-layer
        target (not with global-sparsity); the dict's keys then choose the weights.
      layers: which weights to prune (default all): a list of layer names or weight keys, a
        compiled regex or a predicate on the layer.
      pattern: "unstructured" (default), blocks "OxI" such as "1x4" (each weight keeps as many
        weights as the criterion would, in the whole blocks of largest mean |w|), or "N:M" such
        as "2:4" (at most N of every M consecutive inputs of an output unit), or structured:
        "units" (whole output units, conv filters, depthwise channels, LSTM units with their
        gates) or "inputs" (whole input features or conv input channels), each weight keeping
        about as many weights as the criterion would; along each layer kind's own axes
        (`pruning.registry`).
      norm: how a structure's groups are scored: "l1" (mean |w|) or "l2" (root mean square).
      block: deprecated name of `pattern`.
    Calling it again prunes further: the new masks are nested in the old ones. A refused call
    (a ValueError) leaves the model as it was.

    Example:
      model.fit(x, y, epochs=5)                                   # train
      pruning.prune_low_magnitude(model, "layer-sparsity", 0.8)   # prune
      model.fit(x, y, epochs=2)                                   # fine-tune: zeros stay zero
    """
    criteria.check_criterion(criterion)
    pattern = check_pattern(pattern, block, norm, "prune_low_magnitude")
    if isinstance(value, dict):
        if criterion == "global-sparsity":
            raise ValueError("value: a per-layer dict needs a per-layer criterion "
                             "(threshold, std or layer-sparsity), not global-sparsity")
        if layers is not None and (not isinstance(layers, (list, tuple, set))
                                   or sorted(layers) != sorted(value)):
            raise ValueError(f"layers {layers!r} and the keys of value {sorted(value)} differ: "
                             f"with a per-layer dict, its keys choose the layers")
        layers = list(value)
    chosen = select(model, layers)
    values = _per_weight(value, chosen)
    for v in values:
        _check_value(criterion, v, "value")
    foreign = [f"{w.key} ({type(w.variable.constraint).__name__})" for w in chosen
               if w.variable.constraint is not None and w.pruning_mask is None]
    if foreign:
        raise ValueError(f"weights {foreign} already have a constraint; pruning would replace "
                         f"it: remove it first (nothing was pruned)")
    masks = compute_masks(chosen, criterion, values if isinstance(value, dict) else value,
                          pattern, norm)
    criteria.check_masks(masks, [w.key for w in chosen], criterion, value)
    untouched = [w.key for w, v, mask in zip(chosen, values, masks)
                 if criterion == "layer-sparsity" and v > 0 and mask.all()]
    if untouched:  # e.g. blocks larger than the kernel: one block, and half of it rounds to 0
        warnings.warn(f"pruning: nothing pruned in {untouched}: at layer-sparsity {value} each "
                      f"holds too few weights, blocks or groups of this pattern to remove one",
                      stacklevel=2)
    for weight, mask in zip(chosen, masks):
        set_mask(weight, mask, pattern)
    retrace(model)
    lost = [w.key for w in chosen if not w.in_config]
    if lost:
        warnings.warn(f"pruning: keras.models.load_model rebuilds {lost} from their owner's "
                      f"arguments, without the masks (the zeros are saved): after loading, call "
                      f"pruning.restore_masks(model)", stacklevel=2)
    return model


def set_mask(weight, mask, pattern="unstructured"):
    """Give `weight` (a `registry.PrunableWeight`) the bool `mask`, replacing its current one,
    and zero what it prunes; the caller retraces (`retrace`)."""
    constraint = weight.pruning_mask
    if constraint is not None:
        constraint.mask.assign(np.asarray(mask, np.float32))  # same variable: compiled steps see it
        constraint.pattern = str(pattern)
    else:
        constraint = PruningMask(mask, pattern=str(pattern))
        if weight.constraint_attribute is not None:  # in the layer's config: saved
            setattr(weight.layer, weight.constraint_attribute, constraint)
        weight.variable.constraint = constraint          # applied by the optimizer
    variable = weight.variable
    values = keras.ops.convert_to_numpy(variable.value)
    variable.assign(np.where(mask, values, 0).astype(values.dtype))


def restore_masks(model):
    """Give every prunable weight that has exact zeros but no mask the mask of its non-zeros;
    returns their keys. For models whose layers `load_model` rebuilds without the masks
    (subclassed models, MultiHeadAttention, your own layers): the zeros are saved, the masks not.

    Example:
      model = keras.models.load_model("pruned.keras")
      pruning.restore_masks(model)
    """
    restored = []
    for weight in prunable_weights(model):
        values = keras.ops.convert_to_numpy(weight.variable.value)
        if weight.pruning_mask is None and weight.variable.constraint is None and not values.all():
            set_mask(weight, values != 0, "unstructured")
            restored.append(weight.key)
    lora = lora_over_zeros(model)
    if lora:
        warnings.warn(f"pruning.restore_masks: {lora} {_LORA}", stacklevel=2)
    retrace(model)
    return restored


_LORA = ("hold exact zeros under LoRA (enable_lora): no mask can hold them, as LoRA adds a "
         "trained product to a frozen kernel; call restore_masks before enable_lora (Keras "
         "refuses LoRA on a masked kernel), or prune after merging LoRA's product")


def lora_over_zeros(model):
    """The keys of the weights of LoRA-enabled layers (`layer.enable_lora`) of which at least
    10% are exact zeros, not all: a pruned weight whose mask `load_model` did not bring back,
    whose zeros LoRA's trained product fills."""
    found = []
    for layer, path, _ in registry.walk(model):
        if getattr(layer, "lora_enabled", False):
            found += [f"{path}/{attribute}" for attribute in registry.kinds(layer)
                      if _looks_pruned(getattr(layer, attribute, None))]
    return found


def _looks_pruned(values):
    """Whether at least 10% of `values` are exact zeros, not all. An untrained weight holds only
    zeros (a zero initializer) or few (float16's and bfloat16's random initial values are
    exactly 0 about once in 1000 and 100)."""
    if values is None:
        return False
    zeros = keras.ops.convert_to_numpy(values) == 0
    return bool(0.1 <= zeros.mean() < 1)


def lost_masks(model):
    """The keys of the prunable, trainable float weights of `model` without a constraint of
    which at least 10% are exact zeros, not all: what a pruned model loaded by
    `keras.models.load_model` looks like where Keras rebuilt its layers without their masks
    (`restore_masks` gives them back); a frozen weight keeps its zeros anyway."""
    return [weight.key for weight in prunable_weights(model)
            if weight.variable.constraint is None and weight.variable.trainable
            and "float" in str(weight.variable.dtype) and _looks_pruned(weight.variable.value)]


_checked = weakref.WeakSet()  # the models whose first fit has been looked at


def _warns_of_lost_masks(on_train_begin):
    """`CallbackList.on_train_begin`, after a warning, at a model's first `fit`, naming the
    weights `lost_masks` finds: the fit would train their zeros back.

    Why the class: the one moment before training that every `fit` passes through, also for
    a model loaded without ever meeting this package (a subclassed model's masks are not in
    its config, and Keras has no hook after `load_model`)."""
    def wrapped(self, logs=None):
        model = self.model
        if model is not None and model not in _checked:
            _checked.add(model)
            lost, lora = lost_masks(model), lora_over_zeros(model)
            if lost:
                warnings.warn(f"pruning: {lost} hold exact zeros but no mask, as a pruned model "
                              f"does after keras.models.load_model rebuilt its layers without "
                              f"them; this fit trains the zeros back: call "
                              f"pruning.restore_masks(model) before it (a model you stripped: "
                              f"ignore this)", stacklevel=2)
            if lora:
                warnings.warn(f"pruning: {lora} {_LORA}; this fit trains the zeros away (a "
                              f"model you stripped: ignore this)", stacklevel=2)
        return on_train_begin(self, logs)
    wrapped.checks = True
    return wrapped


if not getattr(keras.callbacks.CallbackList.on_train_begin, "checks", False):
    keras.callbacks.CallbackList.on_train_begin = _warns_of_lost_masks(
        keras.callbacks.CallbackList.on_train_begin)


def strip_pruning(model):
    """Remove every `PruningMask` from `model` in place (the zeros stay) and return it: a plain
    Keras model whose config and SavedModel/TFLite export know nothing of pruning.

    Example:
      pruning.strip_pruning(model).export("saved_model")
    """
    for weight in pruned_weights(model):
        weight.variable.constraint = None
    # Every layer's arguments, also those of a layer whose kernel Keras replaced by one without
    # the mask (`model.quantize`), which keep it in the config
    for layer, _, _ in registry.walk(model):
        for kind in registry.kinds(layer).values():
            if isinstance(getattr(layer, kind.constraint or "", None), PruningMask):
                setattr(layer, kind.constraint, None)
    retrace(model)
    return model
