"""`pruning.shrink(model)`: the structurally pruned model rebuilt without what it no longer uses.

After pruning with pattern "units" or "inputs", whole columns or rows of kernels are zero; the
layers still compute them. `shrink` builds a new, plain Keras model (no masks) in which those
units, filters and input features are gone, so that dense kernels run a smaller network, with
outputs equal to the pruned model's within float rounding.

What goes, per channel (the last axis of a tensor: a Dense layer's units, a conv's filters):
  - a channel no consumer uses: every Dense / conv reading it has zero weights for it (pattern
    "inputs"), through channel-wise layers (activations, BatchNormalization, dropouts, pooling),
    Flatten, Concatenate and Add (the channel goes from every operand of an Add or from none);
  - a channel that is constant (its producer's kernel column is zero, pattern "units": its output
    is act(bias) whatever the input) goes with its constant folded into each consumer's bias:
    exact for a Dense consumer and a conv with "valid" padding; a "same"-padded conv keeps a
    non-zero constant channel, since its zero padding makes the channel's effect position-
    dependent;
  - input features of the model, and features after a Flatten, that a consumer does not use are
    dropped by a `SelectFeatures` layer (a gather) in front of that consumer.
Every other layer is kept as it is, with all its input channels: shrink never rewrites what it
does not understand. A Dense or conv whose activation mixes channels (softmax) keeps its outputs.
It warns of every pruned unit or input it keeps, and why: those that feed such a layer, such a
layer's own (a Conv2DTranspose's, an LSTM's), those under a softmax.

Refused with one line naming the layer: subclassed models (no graph to rewrite), a layer used at
more than one place (its weights would need two shapes), and nested models (shrink them first).

Why not `keras.models.clone_model`: it rebuilds layers one by one with their old shapes; the
shapes here change along the graph, and gathers are inserted, so the graph is walked here. Keras
has no public API for a functional model's nodes: `_nodes_by_depth` is what `Functional.call`
runs (keras/src/ops/function.py), and a Sequential model runs its `_functional`.
"""
import warnings

import keras
import numpy as np

from pruning import criteria, registry

_WEIGHTED = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_CHANNELWISE = (
    keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
    keras.layers.PReLU, keras.layers.BatchNormalization, keras.layers.Dropout,
    keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D, keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout,
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
    keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D, keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling3D)
# Element-wise activations: a unit's output depends on that unit alone.
_ELEMENTWISE = {"linear", "relu", "relu6", "sigmoid", "tanh", "elu", "selu", "gelu", "silu",
                "swish", "softplus", "softsign", "leaky_relu", "hard_sigmoid", "hard_silu",
                "hard_swish", "exponential", "mish", "celu"}


@keras.saving.register_keras_serializable(package="pruning")
class SelectFeatures(keras.layers.Layer):
    """The features `indices` of the last axis, in that order (a gather): what `shrink` puts in
    front of a layer that uses only some of its input features."""

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]

    def call(self, inputs):
        indices = np.asarray(self.indices, "int32")
        if len(inputs.shape) == 2:
            # Whole rows of the transposed matrix rather than scattered entries of each row:
            # LiteRT's GATHER on the last axis copies one float at a time. Measured on the
            # shrunk LeNet-300-100 .tflite (784 -> 314 pixels, batch 1000): 923 us a call, against
            # 376 us this way and 298 us with no gather at all.
            return keras.ops.transpose(keras.ops.take(keras.ops.transpose(inputs), indices, 0))
        return keras.ops.take(inputs, indices, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.indices))

    def get_config(self):
        return {**super().get_config(), "indices": self.indices}


class _Node:
    """One call of a layer: its input and output tensors (ids of the original KerasTensors)."""

    def __init__(self, layer, node, inputs, outputs):
        self.layer, self.node, self.inputs, self.outputs = layer, node, inputs, outputs


def _graph(model):
    """(nodes in call order, model input ids, model output ids, {id: KerasTensor})."""
    graph = model._functional if isinstance(model, keras.Sequential) else model
    if not hasattr(graph, "_nodes_by_depth"):
        kind = "a Sequential model without a keras.Input" if isinstance(
            model, keras.Sequential) else "a subclassed model"
        raise ValueError(f"shrink: {model.name!r} is {kind}: shrink needs a graph to rewrite "
                         f"(a Sequential model starting with keras.Input, or a functional model)")
    tensors, nodes, seen = {}, [], {}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.is_input or not node.operation:
                continue
            layer = node.operation
            if isinstance(layer, keras.Model):
                raise ValueError(f"shrink: {layer.name!r} is a model inside {model.name!r}: "
                                 f"shrink it on its own first, or build the model flat")
            if id(layer) in seen:
                raise ValueError(f"shrink: layer {layer.name!r} is used at more than one place; "
                                 f"its weights cannot take two shapes")
            seen[id(layer)] = layer
            ins, outs = node.arguments.keras_tensors, node.outputs
            tensors.update({id(t): t for t in (*ins, *outs)})
            nodes.append(_Node(layer, node, [id(t) for t in ins], [id(t) for t in outs]))
    tensors.update({id(t): t for t in (*graph.inputs, *graph.outputs)})
    return nodes, [id(t) for t in graph.inputs], [id(t) for t in graph.outputs], tensors


def _elementwise(activation):
    name = getattr(activation, "__name__", str(activation))
    return name in _ELEMENTWISE


def _kind(layer, tensors, node):
    """"weighted", "channelwise", "flatten", "concat", "add" or "pinned" (kept as it is)."""
    rank = len(tensors[node.inputs[0]].shape) if node.inputs else 0
    last = lambda axis: axis in (-1, rank - 1)  # noqa: E731
    if isinstance(layer, _WEIGHTED) and len(node.inputs) == 1:
        if getattr(layer, "groups", 1) == 1 and getattr(layer, "data_format", "channels_last") \
                == "channels_last":
            return "weighted"
    elif isinstance(layer, _CHANNELWISE) and len(node.inputs) == 1:
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return "pinned"
        if isinstance(layer, keras.layers.BatchNormalization) and not last(layer.axis):
            return "pinned"
        if isinstance(layer, keras.layers.Activation) and not _elementwise(layer.activation):
            return "pinned"
        return "channelwise"
    elif isinstance(layer, keras.layers.Flatten) and layer.data_format == "channels_last":
        return "flatten"
    elif isinstance(layer, keras.layers.Concatenate) and last(layer.axis):
        return "concat"
    elif isinstance(layer, keras.layers.Add):
        return "add"
    return "pinned"


def _kernel(layer):
    return keras.ops.convert_to_numpy(layer.kernel.value)


def _groups(layer, structure, attribute="kernel"):
    """The layer's weight `attribute` as [members, groups] of `structure`
    (`criteria.as_groups`), along the axes `pruning.registry` gives its kind: a column per output
    unit or input channel."""
    values = keras.ops.convert_to_numpy(getattr(layer, attribute).value)
    return criteria.as_groups(values, structure, registry.layout_of(layer, attribute))


def _zero_groups(layer, structure, attribute="kernel"):
    """Whether each group of `structure` (output unit or input channel) is all zero."""
    return ~_groups(layer, structure, attribute).any(axis=0)


def _bias(layer):
    return keras.ops.convert_to_numpy(layer.bias.value) if layer.use_bias else \
        np.zeros(layer.kernel.shape[-1], "float32")


def _probe(layer, shape, const):
    """Run a channel-wise layer (or Flatten) on an input whose constant channels hold their
    constant (the others 0): its output's constant entries along the last axis, NaN where the
    output is not constant. NaN everywhere if the input's shape is not fully known."""
    if any(d is None for d in shape[1:]):
        out = layer.compute_output_shape((1, *shape[1:]))
        return np.full(out[-1], np.nan)
    probe = np.broadcast_to(np.nan_to_num(const, nan=0.0), (1, *shape[1:])).astype("float32")
    varying = np.broadcast_to(np.isnan(const), (1, *shape[1:]))
    out = keras.ops.convert_to_numpy(layer(probe, training=False))
    if isinstance(layer, keras.layers.Flatten):
        return np.where(varying.reshape(1, -1)[0], np.nan, out[0])
    flat = out.reshape(-1, out.shape[-1])
    constant = np.all(flat == flat[0], axis=0) & ~np.isnan(const)
    return np.where(constant, flat[0], np.nan)


def _constants(nodes, inputs, tensors):
    """{tensor id: per-channel constant of the pruned model, NaN where a channel varies}."""
    const = {t: np.full(tensors[t].shape[-1], np.nan) for t in inputs}
    for n in nodes:
        kind = _kind(n.layer, tensors, n)
        if kind == "weighted" and _elementwise(n.layer.activation):
            dead = _zero_groups(n.layer, "units")
            value = keras.ops.convert_to_numpy(n.layer.activation(_bias(n.layer)))
            out = [np.where(dead, value, np.nan)]
        elif kind in ("channelwise", "flatten"):
            out = [_probe(n.layer, tensors[n.inputs[0]].shape, const[n.inputs[0]])]
        elif kind == "concat":
            out = [np.concatenate([const[t] for t in n.inputs])]
        elif kind == "add":
            out = [np.sum([const[t] for t in n.inputs], axis=0)]
        else:
            out = [np.full(tensors[t].shape[-1] or 0, np.nan) for t in n.outputs]
        const.update(zip(n.outputs, out))
    return const


def _rows(layer):
    """Whether each input channel of a Dense / conv has a non-zero weight."""
    return _groups(layer, "inputs").any(axis=0)


def _foldable(layer, const):
    """Which constant input channels can leave `layer` with their effect added to its bias."""
    finite = ~np.isnan(const)
    if isinstance(layer, keras.layers.Dense) or layer.padding == "valid":
        return finite
    return finite & (np.nan_to_num(const) == 0)


def _reads(layer, const):
    """Which input channels a Dense / conv still needs: those with a weight, but for the
    constant ones whose effect goes into its bias."""
    return _rows(layer) & ~_foldable(layer, const)


def _needs(n, kind, tensors, need, const):
    """[(input id, which of its channels this node needs)], given what its outputs' consumers
    need."""
    if kind == "weighted":
        t = n.inputs[0]
        return [(t, _reads(n.layer, const[t]))]
    out = need[n.outputs[0]] if n.outputs else None
    if kind == "channelwise":
        return [(n.inputs[0], out)]
    if kind == "flatten":
        return [(n.inputs[0], out.reshape(-1, tensors[n.inputs[0]].shape[-1]).any(axis=0))]
    if kind == "concat":
        sizes = np.cumsum([tensors[t].shape[-1] for t in n.inputs])[:-1]
        return list(zip(n.inputs, np.split(out, sizes)))
    if kind == "add":
        return [(t, out) for t in n.inputs]
    return [(t, np.ones(tensors[t].shape[-1], bool)) for t in n.inputs]


def _plan(nodes, outputs, tensors, const):
    """({tensor id: bool per channel, kept in the shrunk model}, each node's kind).

    Backward, consumers before producers: a tensor's channels are needed when a consumer needs
    them. Forward: a tensor made by a Dense / conv keeps what is needed; a channel-wise layer,
    Flatten, Concatenate or Add outputs what its inputs keep; anything else keeps everything.
    An Add's operands must keep the same channels: where they do not, the missing ones become
    needed and the two passes run again (each round only adds channels, so it ends)."""
    kinds = [_kind(n.layer, tensors, n) for n in nodes]
    width = {t: tensors[t].shape[-1] for t in tensors}
    made = {t for n, kind in zip(nodes, kinds) if kind == "weighted"
            and _elementwise(n.layer.activation) for t in n.outputs}
    extra = {t: np.zeros(width[t], bool) for t in tensors}
    while True:
        need = {t: extra[t].copy() for t in tensors}
        for t in outputs:
            need[t][:] = True
        for n, kind in zip(reversed(nodes), reversed(kinds)):
            for t, needed in _needs(n, kind, tensors, need, const):
                need[t] |= needed
        kept = {t: need[t] if t in made and t not in outputs else np.ones(width[t], bool)
                for t in tensors}
        for n, kind in zip(nodes, kinds):
            ins = [kept[t] for t in n.inputs]
            if kind == "channelwise":
                kept[n.outputs[0]] = ins[0]
            elif kind == "flatten":
                kept[n.outputs[0]] = np.tile(ins[0], width[n.outputs[0]] // ins[0].size)
            elif kind == "concat":
                kept[n.outputs[0]] = np.concatenate(ins)
            elif kind == "add":
                kept[n.outputs[0]] = np.any(ins, axis=0)
        missing = [(t, kept[n.outputs[0]]) for n, kind in zip(nodes, kinds) if kind == "add"
                   for t in n.inputs if (kept[n.outputs[0]] & ~kept[t]).any()]
        if not missing:
            return kept, kinds
        for t, wanted in missing:
            extra[t] |= wanted


def _blockers(nodes, kinds, outputs, start):
    """What keeps the pruned units of tensor `start`: the consumers reached from it through
    channel-wise layers, Flatten, Concatenate and Add that cannot drop a constant channel; else
    the Adds passed, which keep every channel that another of their inputs keeps."""
    found, adds, frontier = [], [], [start]
    while frontier:
        t = frontier.pop()
        if t in outputs:
            found.append("the model's output")
        for n, kind in zip(nodes, kinds):
            if t not in n.inputs:
                continue
            if kind == "add":
                adds.append(f"{n.layer.name} ({type(n.layer).__name__}), whose other inputs keep "
                            f"those channels")
            if kind in ("channelwise", "flatten", "concat", "add"):
                frontier += n.outputs
            elif kind == "pinned":
                found.append(f"{n.layer.name} ({type(n.layer).__name__}), which shrink cannot "
                             f"rewrite")
            elif not isinstance(n.layer, keras.layers.Dense) and n.layer.padding != "valid":
                found.append(f"{n.layer.name}, whose {n.layer.padding!r} padding makes their "
                             f"non-zero constant position-dependent")
    return list(dict.fromkeys(found or adds))


def _pruned_groups(layer):
    """(units, inputs) all zero in `layer`'s prunable weights and its sub-layers'."""
    weights = [(owner, attribute) for owner in (layer, *(s for s, _, _ in registry.walk(layer)))
               for attribute in registry.kinds(owner)
               if isinstance(getattr(owner, attribute, None), keras.Variable)]
    return tuple(sum(int(_zero_groups(owner, structure, attribute).sum())
                     for owner, attribute in weights) for structure in ("units", "inputs"))


def _warn_kept(nodes, kinds, outputs, kept, const):
    """Warn of every pruned unit or input the shrunk model still computes, and why."""
    for n, kind in zip(nodes, kinds):
        layer, why = n.layer, None
        if kind == "weighted" and _elementwise(layer.activation):
            stuck = int((kept[n.outputs[0]] & ~np.isnan(const[n.outputs[0]])).sum())
            why = stuck and (f"kept {stuck} pruned units of {layer.name}: they feed "
                             f"{', '.join(_blockers(nodes, kinds, outputs, n.outputs[0]))}")
        elif kind == "weighted":
            dead = int(_zero_groups(layer, "units").sum())
            why = dead and (f"kept {dead} pruned units of {layer.name}: its activation "
                            f"{getattr(layer.activation, '__name__', layer.activation)} mixes "
                            f"them with the others")
        elif kind == "pinned":
            units, inputs = _pruned_groups(layer)
            parts = [f"{count} pruned {what}" for count, what in ((units, "units"),
                                                                 (inputs, "inputs")) if count]
            why = parts and (f"kept {layer.name} ({type(layer).__name__}) as it is, with its "
                             f"{' and '.join(parts)}: shrink rewrites Dense and Conv1D/2D/3D "
                             f"layers only (channels_last, not grouped)")
        if why:
            warnings.warn(f"pruning.shrink: {why}", stacklevel=3)


def _config(layer, **changes):
    """The layer's config without pruning masks, with `changes`."""
    config = layer.get_config()
    for key, value in list(config.items()):
        if key.endswith("_constraint") and isinstance(value, dict) and \
                value.get("class_name") == "PruningMask":
            config[key] = None
    return {**config, **changes}


def _rebuild_weighted(layer, x, kept_in, need_in, kept_out, const, names):
    """The shrunk copy of a Dense / conv called on x (channels `kept_in` of the original input):
    a gather first where it uses fewer, named after the layer and unlike every name in `names`
    (a model shrunk before holds `<layer>_inputs` already); the folded constants in its bias."""
    use = need_in & kept_in  # the original input channels it reads
    if not np.array_equal(use, kept_in):
        positions = np.flatnonzero(use[kept_in])
        name, n = f"{layer.name}_inputs", 1
        while name in names:
            name, n = f"{layer.name}_inputs_{n}", n + 1
        names.add(name)
        x = SelectFeatures(positions, name=name)(x)
    kernel, bias = _kernel(layer), _bias(layer)
    folded = (~use) & _rows(layer)  # constant channels with weights: into the bias
    if folded.any():
        k = np.moveaxis(kernel, -2, 0)[folded]  # [channels, ..., out]
        scale = const[folded].reshape(-1, *[1] * (k.ndim - 1))  # per channel, every tap
        bias = bias + (k * scale).reshape(-1, k.shape[-1]).sum(axis=0).astype(bias.dtype)
    kernel = np.take(np.take(kernel, np.flatnonzero(use), axis=-2), np.flatnonzero(kept_out),
                     axis=-1)
    size = "units" if isinstance(layer, keras.layers.Dense) else "filters"
    use_bias = layer.use_bias or bool(folded.any())
    new = layer.__class__.from_config(_config(layer, **{size: int(kept_out.sum())},
                                              use_bias=use_bias))
    y = new(x)
    new.set_weights([kernel, bias[kept_out]] if use_bias else [kernel])
    return y


def _rebuild_channelwise(layer, x, kept):
    new = layer.__class__.from_config(_config(layer))
    y = new(x)
    weights = layer.get_weights()
    if any(w.shape[-1] != kept.size for w in weights):
        raise ValueError(f"shrink: {layer.name!r} has weights not per channel: cannot remove "
                         f"its input's channels")
    new.set_weights([w[..., kept] for w in weights])
    return y


def shrink(model):
    """A new plain Keras model without the units, filters and input features that `model`'s
    structured pruning removed (see the module's docstring for what goes and how); its outputs
    equal `model`'s within float rounding. `model` is left as it is.

    Example:
      pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="units")
      model.fit(x, y)                 # fine-tune under the masks
      small = pruning.shrink(model)   # e.g. 784-512-512-10 -> 784-256-256-10
      pruning.prune_low_magnitude(small, "layer-sparsity", 0.8)   # sparse inside, if wanted
    """
    nodes, inputs, outputs, tensors = _graph(model)
    const = _constants(nodes, inputs, tensors)
    kept, kinds = _plan(nodes, outputs, tensors, const)
    empty = [n.layer.name for n, kind in zip(nodes, kinds)
             if kind == "weighted" and not kept[n.outputs[0]].any()]
    if empty:
        raise ValueError(f"shrink: no unit of {empty} is used any more (their consumers' weights "
                         f"for them are all zero): the network would be cut in two")
    new = {t: keras.Input(batch_shape=tensors[t].shape, dtype=tensors[t].dtype,
                          name=tensors[t]._keras_history.operation.name) for t in inputs}
    new_inputs = [new[t] for t in inputs]
    names = {n.layer.name for n in nodes}
    for n, kind in zip(nodes, kinds):
        layer = n.layer
        if kind == "weighted":
            t = n.inputs[0]
            outs = [_rebuild_weighted(layer, new[t], kept[t], _reads(layer, const[t]),
                                      kept[n.outputs[0]], const[t], names)]
        elif kind == "channelwise":
            outs = [_rebuild_channelwise(layer, new[n.inputs[0]], kept[n.inputs[0]])]
        else:
            if kind == "pinned":
                dropped = [t for t in n.inputs if not kept[t].all()]
                assert not dropped, f"{layer.name} lost input channels"
            copy = layer.__class__.from_config(_config(layer))
            args, kwargs = n.node.arguments.fill_in(new)
            outs = keras.tree.flatten(copy(*args, **kwargs))
            copy.set_weights(layer.get_weights())
        new.update(zip(n.outputs, outs))
    _warn_kept(nodes, kinds, outputs, kept, const)
    built = keras.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0],
                        [new[t] for t in outputs] if len(outputs) > 1 else new[outputs[0]],
                        name=model.name)
    if isinstance(model, keras.Sequential):
        return keras.Sequential([keras.Input(batch_shape=tensors[inputs[0]].shape),
                                 *built.layers[1:]], name=model.name)
    return built
