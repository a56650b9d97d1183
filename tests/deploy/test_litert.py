"""The .tflite export: it loads in LiteRT, matches the Keras logits, and stores pruned weights
sparsely, in the blocks they were pruned in."""
import keras
import numpy as np
import pytest

from deploy.litert import TFLiteNetwork, convert, layer_storage
from pruning import prune_low_magnitude


@pytest.fixture(scope="module")
def pruned_mlp():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(3)])
    prune_low_magnitude(model, "layer-sparsity", {l.name: s for l, s in
                                                  zip(model.layers, (0.8, 0.8, 0.1))},
                        pattern="1x4")
    images = np.random.default_rng(1).random((50, 64)).astype(np.float32)
    return model, images


@pytest.mark.parametrize("xnnpack", [True, False])
@pytest.mark.parametrize("batch", [1, 7])
def test_the_sparse_tflite_matches_the_keras_logits(pruned_mlp, xnnpack, batch):
    model, images = pruned_mlp
    network = TFLiteNetwork(convert(model), xnnpack=xnnpack)
    for x in (images[:batch], images[:3], images[:batch]):  # resized and back
        np.testing.assert_allclose(network(x), model(x).numpy(), atol=1e-4)


def test_the_flatbuffer_shows_block_sparse_and_dense_weights(pruned_mlp):
    model, _ = pruned_mlp
    sparse, dense = layer_storage(convert(model)), layer_storage(convert(model, sparse=False))
    assert [l["storage"] for l in sparse] == ["1x4 blocks", "1x4 blocks", "dense"]
    assert [l["storage"] for l in dense] == ["dense"] * 3
    assert [l["shape"] for l in sparse] == [[32, 64], [32, 32], [3, 32]]  # [outputs, inputs]
    assert [l["type"] for l in sparse] == ["float32"] * 3
    kept = [int(np.count_nonzero(l.kernel.numpy())) for l in model.layers]
    assert sparse[0]["bytes"] < 4 * kept[0] + 4 * 64 and dense[0]["bytes"] == 4 * 64 * 32


@pytest.mark.parametrize("block, storage, xnnpack", [
    ("1x16", "1x16 blocks", True),
    ("1x4", "random-sparse + DENSIFY", False)])  # XNNPACK cannot: the built-in kernels run it
def test_the_int8_tflite_is_integer_and_close(block, storage, xnnpack):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(3)])
    prune_low_magnitude(model, "layer-sparsity", {model.layers[0].name: 0.8}, pattern=block)
    images = np.random.default_rng(1).random((50, 64)).astype(np.float32)
    content = convert(model, representative=images)
    assert [(l["type"], l["storage"]) for l in layer_storage(content)] == [
        ("int8", storage), ("int8", "dense")]
    network = TFLiteNetwork(content)
    logits, want = network(images), model(images).numpy()
    assert network.xnnpack == xnnpack
    assert np.mean(logits.argmax(1) == want.argmax(1)) > 0.9
    assert np.max(np.abs(logits - want)) < 0.1 * np.max(np.abs(want))


def test_the_int8_file_reads_int8_pixels_quantized_as_its_input_says(pruned_mlp):
    model, images = pruned_mlp[0], pruned_mlp[1].copy()
    images[0, :2] = 0.0, 1.0  # calibrated on [0, 1]: scale 1/255, zero point -128
    network = TFLiteNetwork(convert(model, representative=images))
    assert network.dtype == np.int8 and network.zero_point == -128
    np.testing.assert_allclose(network.scale, 1 / 255)
    pixels = np.arange(256, dtype=np.float32) / 255  # MNIST's: the bytes minus 128, exactly
    np.testing.assert_array_equal(network.quantize(pixels), np.arange(256) - 128)
    np.testing.assert_array_equal(network.quantize([[-1.0, 2.0]]), [[-128, 127]])  # clipped
    np.testing.assert_array_equal(network(network.quantize(images)), network(images))
    with pytest.raises(TypeError, match="pixels of type uint8: this .tflite reads int8 pixels"):
        network((images * 255).astype(np.uint8))  # raw bytes: not silently read as 0-255
    float_network = TFLiteNetwork(convert(model))
    assert float_network.dtype == np.float32
    np.testing.assert_array_equal(float_network.quantize(images), images)


def test_the_tensorflow_bundled_interpreter_runs_the_same_file(pruned_mlp):
    model, images = pruned_mlp
    network = TFLiteNetwork(convert(model), xnnpack=False, runtime="tensorflow")
    np.testing.assert_allclose(network(images), model(images).numpy(), atol=1e-4)


@pytest.mark.parametrize("inputs, block, representative", [
    (157, "1x4", False), (40, "1x16", True)])  # widths LiteRT's block kernels get wrong
def test_blocks_across_a_width_they_do_not_divide_still_match(inputs, block, representative):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(24),
                              keras.layers.Dense(3)])
    prune_low_magnitude(model, "layer-sparsity", {model.layers[0].name: 0.7}, pattern=block)
    images = np.random.default_rng(1).random((50, inputs)).astype(np.float32)
    content = convert(model, representative=images if representative else None)
    first = layer_storage(content)[0]
    assert first["storage"] == f"{block} blocks" and first["shape"][-1] % int(block[2:]) == 0
    want = model(images).numpy()
    tolerance = 0.05 * np.max(np.abs(want)) if representative else 1e-4
    np.testing.assert_allclose(TFLiteNetwork(content)(images), want, atol=tolerance)
