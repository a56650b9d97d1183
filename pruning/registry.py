"""Which weights of which layers are pruned, found recursively through any model.

A layer kind is prunable when it is registered here with the attributes that hold its weight
matrices (and, for Keras' own layers, the constructor argument that holds each one's constraint,
so that the mask travels in the layer's config). `prunable_weights` walks the model's tree of
layers, so it finds them inside nested models, `TimeDistributed`, `Bidirectional`, RNN cells,
`MultiHeadAttention` (its four `EinsumDense` projections) and a user's own layers; every other
weight of rank >= 2 is reported as unpruned (`unpruned_weights`), never skipped in silence.

    pruning.register_prunable(MyLayer, "w")   # MyLayer.w is pruned from now on
"""
import dataclasses

import keras

from pruning.masks import PruningMask

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
          keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
          keras.layers.Conv3DTranspose)
_CELLS = (keras.layers.SimpleRNNCell, keras.layers.LSTMCell, keras.layers.GRUCell)

# layer class -> {weight attribute: constraint attribute (None: the mask is not in the config)}
_REGISTRY = {
    keras.layers.Dense: {"kernel": "kernel_constraint"},
    keras.layers.EinsumDense: {"kernel": "kernel_constraint"},
    **{cls: {"kernel": "kernel_constraint"} for cls in _CONVS},
    keras.layers.DepthwiseConv1D: {"kernel": "depthwise_constraint"},
    keras.layers.DepthwiseConv2D: {"kernel": "depthwise_constraint"},
    keras.layers.SeparableConv1D: {"depthwise_kernel": "depthwise_constraint",
                                   "pointwise_kernel": "pointwise_constraint"},
    keras.layers.SeparableConv2D: {"depthwise_kernel": "depthwise_constraint",
                                   "pointwise_kernel": "pointwise_constraint"},
    keras.layers.Embedding: {"embeddings": "embeddings_constraint"},
    **{cls: {"kernel": "kernel_constraint", "recurrent_kernel": "recurrent_constraint"}
       for cls in _CELLS},
}
_BUILTIN = frozenset(_REGISTRY)
# Layers whose config carries the full config of the layers inside them, so that load_model and
# clone_model rebuild those with their constraints (MultiHeadAttention and a user's own layers
# rebuild theirs from their own arguments, without the masks).
_CONFIG_CARRIERS = (keras.Sequential, keras.layers.TimeDistributed, keras.layers.Bidirectional,
                    keras.layers.RNN)


def register_prunable(layer_class, *attributes):
    """Prune the weights `attributes` (names of `keras.Variable` attributes) of every
    `layer_class` layer, like tfmot's `PrunableLayer`; returns `layer_class`.

    Example:
      class Gate(keras.layers.Layer):
          def build(self, shape):
              self.w = self.add_weight(shape=(shape[-1], 8))
      pruning.register_prunable(Gate, "w")
    The mask is set on the variable only (Keras keeps no constraint of a custom layer in its
    config): after `keras.models.load_model`, call `pruning.restore_masks(model)`.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise ValueError(f"layer_class must be a keras.layers.Layer subclass, got {layer_class!r}")
    if not attributes or not all(isinstance(a, str) and a.isidentifier() for a in attributes):
        raise ValueError(f"attributes must be one or more attribute names, got {attributes!r}")
    _REGISTRY[layer_class] = {a: None for a in attributes}
    return layer_class


@dataclasses.dataclass(frozen=True)
class PrunableWeight:
    """One weight matrix the package can prune: `key` ("block1/conv/kernel") names it."""
    key: str
    layer: keras.layers.Layer
    attribute: str
    constraint_attribute: str | None  # the layer's argument that saves the mask in its config
    in_config: bool  # whether load_model / clone_model rebuild it with its mask

    @property
    def variable(self):
        return getattr(self.layer, self.attribute)

    @property
    def mask(self):
        """Its PruningMask, or None."""
        constraint = self.variable.constraint
        return constraint if isinstance(constraint, PruningMask) else None


def _attributes(layer):
    """{weight attribute: constraint attribute} of the most specific registered class."""
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            return cls, _REGISTRY[cls]
    return None, {}


def _children(layer):
    # Keras has no public list of a layer's sub-layers; _flatten_layers is what Keras' own
    # weight tracking walks.
    return layer._flatten_layers(include_self=False, recursive=False)


def walk(layer, prefix="", carried=True):
    """(layer, path, whether its config travels in the model's) for every sub-layer."""
    carries = carried and (type(layer) in (keras.Model, keras.Sequential) or
                           type(layer).__name__ == "Functional" or
                           isinstance(layer, _CONFIG_CARRIERS))
    for child in _children(layer):
        path = prefix + child.name
        yield child, path, carries
        yield from walk(child, path + "/", carries)


def _owned_variables(layer):
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


UNREGISTERED = "no registered layer kind holds it (pruning.register_prunable)"


def scan(model):
    """(prunable weights, unpruned matrices as (key, shape, why)) of `model`, in the order of
    `model.weights`; a layer used twice counts once. Unpruned: the rank >= 2 weights of layers no
    registered kind covers, the weights of registered layers that are not built, and those that
    are not a plain variable (a LoRA-enabled or quantized layer's kernel)."""
    order = {id(v): i for i, v in enumerate(model.weights)}
    prunable, other, seen = [], [], set()
    for layer, path, carried in walk(model):
        cls, attributes = _attributes(layer)
        for attribute, constraint_attribute in attributes.items():
            key = f"{path}/{attribute}"
            if not layer.built:
                other.append((key, (), "its layer is not built (never called)", None))
                continue
            variable = getattr(layer, attribute, None)
            if not isinstance(variable, keras.Variable):
                other.append((key, tuple(getattr(variable, "shape", ())),
                              "not a plain variable (a LoRA-enabled or quantized layer?)", None))
                continue
            if id(variable) not in seen:
                seen.add(id(variable))
                prunable.append(PrunableWeight(key, layer, attribute, constraint_attribute,
                                               carried and cls in _BUILTIN))
        for variable in [] if cls else _owned_variables(layer):  # a registered kind's others
            if id(variable) not in seen and len(variable.shape) >= 2:      # are its biases
                seen.add(id(variable))
                other.append((f"{path}/{variable.name}", tuple(variable.shape), UNREGISTERED,
                              id(variable)))
    prunable.sort(key=lambda w: order.get(id(w.variable), len(order)))
    other.sort(key=lambda o: order.get(o[3], len(order)))
    return prunable, [(key, shape, why) for key, shape, why, _ in other]
