"""Which weights of which layers are pruned, and along which axes: the package's one table of
layer kinds, found recursively through any model.

A layer kind is prunable when `_KINDS` lists it: for each of its weight matrices, the constructor
argument that holds its constraint (so that the mask travels in the layer's config; None for a
user's layer) and its `Layout` (which axes hold the output units and the input features, and an
LSTM's gates). Criteria, schedules, `summary`, `shrink` and `GroupLasso` read the layout from
here. `prunable_weights` walks the model's tree of layers, so it finds them inside nested models,
`TimeDistributed`, `Bidirectional`, RNN cells, `MultiHeadAttention` (its four `EinsumDense`
projections) and a user's own layers; every other weight of rank >= 2 is reported as unpruned
(`unpruned_weights`), never skipped in silence.

    pruning.register_prunable(MyLayer, "w")   # MyLayer.w is pruned from now on

Coupled weights (removing one means removing the other; see docs/package.md's layout table): an
LSTM or GRU unit is one column of each gate of `kernel` and `recurrent_kernel` (its gates are one
group for "units") and also row u of `recurrent_kernel`; a depthwise channel is also the next
layer's input channel; a Dense unit is the next layer's input feature. `shrink` removes the
coupled parts of the Dense and conv layers of a graph; the others keep them, pruned to zero.
"""
import dataclasses

import keras

from pruning.criteria import DENSE, Layout
from pruning.masks import PruningMask

TRANSPOSED = Layout(outputs=(-2,), inputs=(-1,))       # [..., filters, in channels]
DEPTHWISE = Layout(outputs=(-2, -1), inputs=(-2,))     # [..., channels, depth multiplier]


def _einsum(layer):
    """EinsumDense's layout from its equation "input,kernel->output": the kernel's axes that
    reach the output hold its units, those summed over its inputs.

    >>> _einsum(keras.layers.EinsumDense("abc,cde->abde", (None, 2, 4)))  # attention's query
    Layout(outputs=(1, 2), inputs=(0,), gates=1)
    """
    lhs, output = layer.equation.split("->")
    inputs, kernel = lhs.split(",")
    return Layout(outputs=tuple(i for i, c in enumerate(kernel) if c in output),
                  inputs=tuple(i for i, c in enumerate(kernel) if c in inputs and c not in output))


@dataclasses.dataclass(frozen=True)
class Kind:
    """One prunable weight of a layer kind: the layer argument that saves its constraint in the
    layer's config (None: not saved), and its `Layout`, or a function of the layer giving it."""
    constraint: str | None
    layout: object = DENSE

    def layout_of(self, layer):
        return self.layout(layer) if callable(self.layout) else self.layout


def _rnn(gates):
    layout = Layout(gates=gates)
    return {"kernel": Kind("kernel_constraint", layout),
            "recurrent_kernel": Kind("recurrent_constraint", layout)}


_L = keras.layers
# layer class -> {weight attribute: Kind}. The most specific registered class of a layer wins.
_KINDS = {
    _L.Dense: {"kernel": Kind("kernel_constraint")},                  # [inputs, units]
    _L.EinsumDense: {"kernel": Kind("kernel_constraint", _einsum)},   # by its equation
    **{cls: {"kernel": Kind("kernel_constraint")}                    # [..., in, filters]
       for cls in (_L.Conv1D, _L.Conv2D, _L.Conv3D)},
    **{cls: {"kernel": Kind("kernel_constraint", TRANSPOSED)}        # [..., filters, in]
       for cls in (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)},
    **{cls: {"kernel": Kind("depthwise_constraint", DEPTHWISE)}
       for cls in (_L.DepthwiseConv1D, _L.DepthwiseConv2D)},
    **{cls: {"depthwise_kernel": Kind("depthwise_constraint", DEPTHWISE),
             "pointwise_kernel": Kind("pointwise_constraint")}
       for cls in (_L.SeparableConv1D, _L.SeparableConv2D)},
    _L.Embedding: {"embeddings": Kind("embeddings_constraint")},      # [tokens, dimensions]
    _L.SimpleRNNCell: _rnn(1),                                        # [in, units]
    _L.LSTMCell: _rnn(4),                                             # [in, 4 x units]: i f c o
    _L.GRUCell: _rnn(3),                                              # [in, 3 x units]: z r h
}
_BUILTIN = frozenset(_KINDS)
# Layers whose config carries the full config of the layers inside them, so that load_model and
# clone_model rebuild those with their constraints (MultiHeadAttention and a user's own layers
# rebuild theirs from their own arguments, without the masks).
_CONFIG_CARRIERS = (keras.Sequential, keras.layers.TimeDistributed, keras.layers.Bidirectional,
                    keras.layers.RNN, keras.layers.StackedRNNCells)


def register_prunable(layer_class, *attributes, layout=None):
    """Prune the weights `attributes` (names of `keras.Variable` attributes) of every
    `layer_class` layer, like tfmot's `PrunableLayer`; returns `layer_class`.

    `layout`: a `pruning.Layout` (one for all the attributes, or {attribute: Layout}) saying
    which axes hold the output units and the input features, for the patterns ("1x4", "2:4",
    "units", "inputs"); default `Layout()`, Keras' own: the last axis the units, the second-last
    the inputs.

    Example:
      class Gate(keras.layers.Layer):
          def build(self, shape):
              self.w = self.add_weight(shape=(8, shape[-1]))    # [units, inputs]
      pruning.register_prunable(Gate, "w", layout=pruning.Layout(outputs=(0,), inputs=(1,)))
    The mask is set on the variable only (Keras keeps no constraint of a custom layer in its
    config): after `keras.models.load_model`, call `pruning.restore_masks(model)`.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise ValueError(f"layer_class must be a keras.layers.Layer subclass, got {layer_class!r}")
    if not attributes or not all(isinstance(a, str) and a.isidentifier() for a in attributes):
        raise ValueError(f"attributes must be one or more attribute names, got {attributes!r}")
    layouts = layout if isinstance(layout, dict) else {a: layout for a in attributes}
    if set(layouts) != set(attributes) or not all(
            v is None or isinstance(v, Layout) for v in layouts.values()):
        raise ValueError(f"layout must be a pruning.Layout or {{attribute: Layout}} for "
                         f"{list(attributes)}, got {layout!r}")
    _KINDS[layer_class] = {a: Kind(None, layouts[a] or DENSE) for a in attributes}
    return layer_class


@dataclasses.dataclass(frozen=True)
class PrunableWeight:
    """One weight matrix the package can prune: `key` ("block1/conv/kernel") names it."""
    key: str
    layer: keras.layers.Layer
    attribute: str
    constraint_attribute: str | None  # the layer's argument that saves the mask in its config
    in_config: bool  # whether load_model / clone_model rebuild it with its mask
    layout: Layout  # its axes (the table `_KINDS`)

    @property
    def variable(self):
        return getattr(self.layer, self.attribute)

    @property
    def pruning_mask(self):
        """Its `PruningMask` (the constraint that holds its mask), or None."""
        constraint = self.variable.constraint
        return constraint if isinstance(constraint, PruningMask) else None


def _attributes(layer):
    """(the most specific registered class of `layer`, its {weight attribute: Kind})."""
    for cls in type(layer).__mro__:
        if cls in _KINDS:
            return cls, _KINDS[cls]
    return None, {}


def kinds(layer):
    """{weight attribute: Kind} of `layer`'s registered kind ({} if none)."""
    return _attributes(layer)[1]


def layout_of(layer, attribute):
    """The `Layout` of `layer`'s weight `attribute` (the table's, or Keras' default)."""
    kind = kinds(layer).get(attribute)
    return DENSE if kind is None else kind.layout_of(layer)


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
        for attribute, kind in attributes.items():
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
                prunable.append(PrunableWeight(key, layer, attribute, kind.constraint,
                                               carried and cls in _BUILTIN,
                                               kind.layout_of(layer)))
        for variable in [] if cls else _owned_variables(layer):  # a registered kind's others
            if id(variable) not in seen and len(variable.shape) >= 2:      # are its biases
                seen.add(id(variable))
                other.append((f"{path}/{variable.name}", tuple(variable.shape), UNREGISTERED,
                              id(variable)))
    prunable.sort(key=lambda w: order.get(id(w.variable), len(order)))
    other.sort(key=lambda o: order.get(o[3], len(order)))
    return prunable, [(key, shape, why) for key, shape, why, _ in other]
