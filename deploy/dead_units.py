"""Dead units out of a sparse network before it is stored: the same predictions, fewer bytes.

Pruning single weights leaves whole units (a dense layer's outputs, a conv layer's channels)
that are dead: no weight of the next layer reads them, or no weight feeds them, so that they
output a constant, act(bias). Stored as they are, each keeps its bias (4 bytes), the weights that
feed it or read it, and a row pointer; in LeNet-5 pruned by variational dropout 407 of fc1's 500
units are dead, and their biases alone were a fifth of the stored bytes. `pruning.shrink` removes
units from a Keras model whose groups were pruned whole; this removes them from the stored
matrices of any pruned network, exactly:
  - a unit nothing reads is dropped, with its bias and the weights that feed it;
  - a unit nothing feeds is a constant c = act(bias) (and so is its max-pool): the next layer
    adds c times the weights that read it to its own biases, and the unit is dropped.
Dropping one unit can kill others (the weights it read are gone), so both rules repeat until
nothing changes. The network's inputs and its outputs (the logits) are never dropped.

Layers are `deploy.sparse_graph.sparse_layers` dicts (a "spec" each; "codes" too when they carry
a codebook): row r of a layer's matrix reads unit r % C of the layer before (C units), as the
row-major layouts of a dense input [C], a conv patch [kh, kw, C] and a flattened feature map
[H, W, C] all do. Pure NumPy: a new list, the input untouched.
"""
import numpy as np

from compression.coo import index_dtype

PER_WEIGHT = ("values", "codes")  # arrays with one entry per stored weight, besides "indices"


def drop_dead_units(layers):
    """`layers` with every dead unit removed (see the module's docstring); the same predictions
    up to float32 rounding of the folded biases."""
    layers = [dict(l, spec=dict(l["spec"]), bias=l["bias"].astype(np.float32)) for l in layers]
    changed = True
    while changed:
        changed = False
        for i in range(len(layers) - 1):
            changed |= _drop(layers, i)
    return layers


def _drop(layers, i):
    """Remove layer i's dead units (folding its constant ones into layer i + 1's biases), in
    place in `layers`; True if any went."""
    layer, after = layers[i], layers[i + 1]
    units = int(layer["shape"][1])
    if int(after["shape"][0]) % units:
        raise ValueError(f"{after['name']} has {after['shape'][0]} input rows, not a multiple "
                         f"of {layer['name']}'s {units} units")
    read_by = after["indices"][:, 0].astype(np.int64) % units
    fed = np.zeros(units, bool)
    fed[layer["indices"][:, 1].astype(np.int64)] = True
    constant = ~fed[read_by]  # the next layer's weights that read a constant unit
    changed = bool(constant.any())
    if changed:
        value = layer["bias"][read_by[constant]]
        if layer["spec"]["activation"] == "relu":
            value = np.maximum(value, 0)
        folded = np.bincount(after["indices"][constant, 1].astype(np.int64),
                             weights=value * after["values"][constant],
                             minlength=len(after["bias"]))
        after["bias"] = (after["bias"] + folded).astype(np.float32)
        _keep_weights(after, ~constant)
        read_by = read_by[~constant]
    alive = fed & np.isin(np.arange(units), read_by)
    if not alive.any():  # nothing reaches the next layer: one unit stays, so that shapes do,
        alive[0] = True  # fed by nothing (so that it reads nothing of the layers before)
        cols = layer["indices"][:, 1].astype(np.int64)
        if (cols == 0).any():
            _keep_weights(layer, cols != 0)
            changed = True  # the layers before may die now
    if alive.all():
        return changed
    _keep_units(layer, after, alive)
    return True


def _keep_weights(layer, keep):
    for key in ("indices", *PER_WEIGHT):
        if key in layer:
            layer[key] = layer[key][keep]


def _keep_units(layer, after, alive):
    """Keep only the `alive` units of `layer`: its columns, and the rows of `after` reading them
    (renumbered in order, so both stay row-major)."""
    units, kept = len(alive), int(alive.sum())
    new = np.cumsum(alive) - 1  # a kept unit's new number
    cols = layer["indices"][:, 1].astype(np.int64)
    _keep_weights(layer, alive[cols])
    rows = after["indices"][:, 0].astype(np.int64)
    _keep_weights(after, alive[rows % units])
    rows = after["indices"][:, 0].astype(np.int64)
    layer["shape"] = np.array([layer["shape"][0], kept], np.int32)
    after["shape"] = np.array([after["shape"][0] // units * kept, after["shape"][1]], np.int32)
    layer["indices"] = np.stack([layer["indices"][:, 0], new[layer["indices"][:, 1]]], 1)
    after["indices"] = np.stack([rows // units * kept + new[rows % units],
                                 after["indices"][:, 1]], 1)
    for l in (layer, after):
        l["indices"] = l["indices"].astype(index_dtype(l["shape"]))
    layer["bias"] = layer["bias"][alive]
    if layer["spec"]["kind"] == "conv":
        layer["spec"]["kernel_shape"] = [*layer["spec"]["kernel_shape"][:3], kept]
    if after["spec"]["kind"] == "conv":
        after["spec"]["kernel_shape"] = [*after["spec"]["kernel_shape"][:2], kept,
                                         after["spec"]["kernel_shape"][3]]
        after["spec"]["input_shape"] = [*after["spec"]["input_shape"][:2], kept]
