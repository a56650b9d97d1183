import keras
import numpy as np
import pytest
import tensorflow as tf

from compression import formats
from deploy.codebooks import choose_bits, share_weights, train_codebooks
from deploy.sparse_graph import sparse_layers
from networks.builders import weight_layers
from pruning import prune_low_magnitude
from tests.helpers import TINY_CONV, tiny_conv_data, tiny_model


def shared_conv_model(bits=3):
    model, _ = tiny_model(TINY_CONV)
    prune_low_magnitude(model, "global-sparsity", 0.5)
    return model, share_weights(sparse_layers(model), bits)


def test_training_moves_the_codebooks_and_keeps_the_codes_and_the_zeros():
    model, shared = shared_conv_model()
    trained, history = train_codebooks(model, shared, tiny_conv_data(), epochs=2,
                                       learning_rate=1e-2, batch_size=10, log=lambda *_: None)
    assert [h["epoch"] for h in history] == [1, 2] and 0 <= history[-1]["val_accuracy"] <= 1
    for before, after, layer in zip(shared, trained, weight_layers(model)):
        assert not np.allclose(before["codebook"], after["codebook"])  # the centroids moved
        np.testing.assert_array_equal(before["codes"], after["codes"])  # the codes did not
        np.testing.assert_array_equal(after["values"], after["codebook"][after["codes"]])
        kernel = layer.kernel.numpy().reshape(after["shape"])
        np.testing.assert_array_equal(kernel[tuple(after["indices"].T.astype(int))],
                                      after["values"])  # the model runs the shared weights
        assert np.count_nonzero(kernel) <= len(after["values"])  # pruned weights stay zero


def test_a_centroid_moves_by_the_summed_gradients_of_the_weights_sharing_it():
    model, shared = shared_conv_model()
    data = tiny_conv_data(n=10)
    x, y = data["train"]
    for layer, l in zip(weight_layers(model), shared):  # the shared model, to differentiate
        kernel = np.zeros(l["shape"], np.float32)
        kernel[tuple(l["indices"].T.astype(int))] = l["values"]
        layer.kernel.assign(kernel.reshape(layer.kernel.shape))
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x))
    grads = tape.gradient(loss, [layer.kernel for layer in weight_layers(model)])
    # One step of plain SGD (momentum 0) on one batch of the whole (10-image) training set.
    trained, _ = train_codebooks(model, shared, data, epochs=1, learning_rate=0.1,
                                 batch_size=10, momentum=0.0, log=lambda *_: None)
    for l, after, g in zip(shared, trained, grads):
        g = g.numpy().reshape(l["shape"])[tuple(l["indices"].T.astype(int))]
        expected = l["codebook"] - 0.1 * np.bincount(l["codes"], weights=g,
                                                     minlength=len(l["codebook"]))
        # the step, then the rounding to what the file holds (float16: half a step is 2^-11)
        np.testing.assert_allclose(after["codebook"], expected, rtol=2.0 ** -11, atol=1e-6)
        np.testing.assert_array_equal(after["codebook"], formats.as_stored(after["codebook"]))


def test_a_layer_with_its_own_codebook_is_stored_with_it():
    _, shared = shared_conv_model(bits=3)
    moved = [dict(l, codebook=l["codebook"] + 0.5) for l in shared]
    encoded = formats.encode(moved, "shared-3bit-huffman")
    decoded = formats.decode(encoded, "shared-3bit-huffman", [l["name"] for l in moved])
    for layer, back in zip(moved, decoded):
        np.testing.assert_array_equal(  # as stored: float16
            back["values"], layer["codebook"].astype(np.float16)[layer["codes"]])


def test_each_layer_gets_the_smallest_width_within_its_share_of_the_budget():
    """A budget of 1 (any loss) gives every layer 2 bits; a budget of 0 a width at which it
    alone loses nothing, or 8; the kernels are put back; the widths are stored and decoded."""
    model, _ = tiny_model(TINY_CONV)
    prune_low_magnitude(model, "global-sparsity", 0.5)
    layers, before = sparse_layers(model), [l.kernel.numpy() for l in weight_layers(model)]
    validation = tiny_conv_data()["validation"]
    loose, _ = choose_bits(model, layers, validation, budget=1.0)
    assert loose == [2] * len(layers)
    strict, found = choose_bits(model, layers, validation, budget=0.0)
    for layer, bits in zip(layers, strict):
        tried = found["tried"][layer["name"]]
        assert max(tried) == bits and all(tried[b] < found["float"] for b in tried if b < bits)
        assert tried[bits] >= found["float"] or bits == 8
    for layer, kernel in zip(weight_layers(model), before):
        np.testing.assert_array_equal(layer.kernel.numpy(), kernel)
    shared = share_weights(layers, strict)
    (arrays, *_), = [formats.encode(shared[:1], formats.MIXED)]
    assert int(arrays["bits"][0]) == strict[0]
    for a, b in zip(shared, formats.decode(formats.encode(shared, formats.MIXED), formats.MIXED,
                                           [l["name"] for l in shared])):
        np.testing.assert_array_equal(a["values"], b["values"])
        np.testing.assert_array_equal(a["indices"], b["indices"])


def test_the_mixed_format_needs_each_layers_codebook():
    model, _ = tiny_model(TINY_CONV)
    with pytest.raises(ValueError, match="shared-mixed-huffman.*has none"):
        formats.encode(sparse_layers(model), formats.MIXED)
