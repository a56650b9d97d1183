"""Each layer kind pruned along its true axes (`pruning.registry`'s table): whole depthwise
channels, transposed-conv filters on their own axis, LSTM units with their four gates, attention
heads' columns, a user's layer with its declared layout."""
import re

import keras
import numpy as np
import pytest

import pruning
from _models import values
from pruning import Layout, get_masks, prune_low_magnitude
from pruning.registry import layout_of


def built(*layers, shape):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape), *layers])
    model(np.zeros((1, *shape), "float32"))
    return model


def assert_whole_groups(array, axes):
    """Every index along `axes` is all zero or all non-zero, and some of each."""
    moved = np.moveaxis(array, axes, range(len(axes)))
    rows = moved.reshape(int(np.prod([array.shape[a] for a in axes])), -1) != 0
    assert (rows.all(axis=1) | ~rows.any(axis=1)).all(), "a group is partly pruned"
    assert rows.all(axis=1).any() and (~rows.any(axis=1)).any()


def test_units_of_a_depthwise_conv_are_its_channels():
    model = built(keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw"), shape=(6, 6, 8))
    prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="units")
    kernel = values(model.get_layer("dw").kernel)  # [3, 3, 8 channels, 2]
    assert_whole_groups(kernel, (2, 3))
    assert (~kernel.reshape(9, -1).any(axis=0)).mean() == 0.5
    assert "units" in str(pruning.summary(model))


def test_a_transposed_convs_filters_are_its_second_last_axis():
    model = built(keras.layers.Conv2DTranspose(6, 3, name="up"), shape=(4, 4, 10))
    kernel = model.get_layer("up").kernel  # [3, 3, 6 filters, 10 inputs]
    assert tuple(kernel.shape) == (3, 3, 6, 10)
    prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="units")
    assert_whole_groups(values(kernel), (2,))
    prune_low_magnitude(built(keras.layers.Conv2DTranspose(6, 3, name="up"), shape=(4, 4, 10)),
                        "layer-sparsity", 0.5, pattern="inputs")


def test_a_transposed_convs_input_channels_are_its_last_axis():
    model = built(keras.layers.Conv2DTranspose(6, 3, name="up"), shape=(4, 4, 10))
    prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="inputs")
    assert_whole_groups(values(model.get_layer("up").kernel), (3,))


def test_blocks_of_a_transposed_conv_run_along_its_inputs_within_one_filter():
    model = built(keras.layers.Conv2DTranspose(3, 1, name="up"), shape=(2, 2, 8))
    prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="1x4")
    kernel = values(model.get_layer("up").kernel)[0, 0]  # [3 filters, 8 inputs]
    blocks = kernel.reshape(3, 2, 4) != 0  # per filter, inputs 0-3 and 4-7
    assert (blocks.all(axis=2) | ~blocks.any(axis=2)).all()


def test_an_lstm_unit_loses_all_four_gates_together():
    model = built(keras.layers.LSTM(6, name="lstm"), shape=(5, 4))
    prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="units")
    cell = model.get_layer("lstm").cell
    for kernel in (values(cell.kernel), values(cell.recurrent_kernel)):  # [in, 4 x 6]
        gates = kernel.reshape(kernel.shape[0], 4, 6) != 0
        unit_kept = gates.any(axis=(0, 1))
        assert (gates.all(axis=(0, 1)) == unit_kept).all(), "a unit lost only some gates"
        assert unit_kept.sum() == 3


def test_an_attention_projection_prunes_whole_head_columns_and_its_output_whole_units():
    x = keras.Input((3, 8))
    model = keras.Model(x, keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x))
    prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="units")
    masks = get_masks(model)
    query = masks["mha/query/kernel"]  # [8 inputs, 2 heads, 4 dims]
    assert (query.all(axis=0) | ~query.any(axis=0)).all() and query.any(axis=0).mean() == 0.5
    out = masks["mha/attention_output/kernel"]  # [2 heads, 4 dims, 8 units]
    assert (out.all(axis=(0, 1)) | ~out.any(axis=(0, 1))).all()


@pytest.mark.parametrize("kind, attribute, layout", [
    (keras.layers.Dense(4), "kernel", Layout((-1,), (-2,))),
    (keras.layers.Conv1DTranspose(4, 3), "kernel", Layout((-2,), (-1,))),
    (keras.layers.DepthwiseConv1D(3), "kernel", Layout((-2, -1), (-2,))),
    (keras.layers.GRUCell(4), "recurrent_kernel", Layout(gates=3)),
    (keras.layers.SeparableConv1D(4, 3), "pointwise_kernel", Layout()),
])
def test_the_table_gives_each_kind_its_layout(kind, attribute, layout):
    assert layout_of(kind, attribute) == layout


def test_a_registered_layer_declares_its_layout():
    class Rows(keras.layers.Layer):
        """A kernel stored [units, inputs], like torch's Linear."""

        def build(self, shape):
            self.w = self.add_weight(shape=(6, shape[-1]), initializer="random_normal")

        def call(self, x):
            return keras.ops.matmul(x, keras.ops.transpose(self.w))

    pruning.register_prunable(Rows, "w", layout=Layout(outputs=(0,), inputs=(1,)))
    model = built(Rows(name="rows"), shape=(10,))
    with pytest.warns(UserWarning, match="restore_masks"):
        prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="units")
    w = values(model.get_layer("rows").w)
    assert_whole_groups(w, (0,))  # whole rows: units
    with pytest.raises(ValueError, match="layout must be a pruning.Layout"):
        pruning.register_prunable(Rows, "w", layout=(0, 1))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the layouts are NumPy and the table: the same on every backend")
def test_mobilenet_v2s_depthwise_kernels_lose_whole_channels():
    """A model from keras.applications: all 17 depthwise kernels pruned by channel."""
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                           classes=4)
    depthwise = re.compile(r".*depthwise")
    prune_low_magnitude(model, "layer-sparsity", 0.25, layers=depthwise, pattern="units")
    kernels = [w for w in pruning.pruned_weights(model)]
    assert len(kernels) == 17
    for weight in kernels:
        kernel = values(weight.variable)
        channels = kernel.reshape(-1, kernel.shape[2] * kernel.shape[3]) != 0
        assert (channels.all(axis=0) | ~channels.any(axis=0)).all(), weight.key
        assert (~channels.any(axis=0)).mean() == pytest.approx(0.25, abs=0.05), weight.key
