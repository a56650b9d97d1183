"""The network builders: shapes, the papers' sizes, initialisation, ByteDropout and the parameter
count."""
import keras
import numpy as np
import pytest

import configs
from networks.builders import architecture, build_network, parameter_count, weight_layers
from networks.layers import ByteDropout


def test_original_network_shapes():
    model = build_network(configs.DenseConfig())
    assert [layer.kernel.shape for layer in weight_layers(model)] == [
        (784, 512), (512, 512), (512, 10)]
    assert model(np.zeros((3, 784), np.float32)).shape == (3, 10)
    assert sum("dropout" in layer.name for layer in model.layers) == 2
    assert configs.dense_config("mlp") == configs.DenseConfig()  # the original, unchanged


@pytest.mark.parametrize("network, params, kernels", [
    ("lenet-300-100", 266_610, [(784, 300), (300, 100), (100, 10)]),
    ("lenet-5", 431_080, [(5, 5, 1, 20), (5, 5, 20, 50), (800, 500), (500, 10)])])
def test_the_papers_networks_have_their_published_sizes(network, params, kernels):
    model = build_network(configs.dense_config(network))
    assert model.count_params() == params
    assert [tuple(layer.kernel.shape) for layer in weight_layers(model)] == kernels
    assert model(np.zeros((2, 784), np.float32)).shape == (2, 10)
    assert not any("dropout" in layer.name for layer in model.layers)


@pytest.mark.parametrize("network", ["mlp", "lenet-5"])
def test_every_layer_draws_its_own_initial_weights(network):
    """Not one random stream for all: a layer's kernel is not a rescaled prefix of another's."""
    keras.utils.set_random_seed(1)
    kernels = [l.kernel.numpy().ravel() for l in weight_layers(build_network(
        configs.dense_config(network)))]
    for a, b in zip(kernels, kernels[1:]):
        n = min(len(a), len(b))
        assert abs(np.corrcoef(a[:n], b[:n])[0, 1]) < 0.5  # one shared stream: 1.0


def test_networks_take_their_input_and_output_sizes_from_the_config():
    config = configs.override(configs.dense_config("lenet-5"), image_shape=(20, 24),
                              num_classes=7)
    model = build_network(config)
    assert architecture(model) == "480-conv20-conv50-500-7"
    assert model(np.zeros((2, 480), np.float32)).shape == (2, 7)


def test_images_too_small_for_the_convs_are_one_clear_error():
    with pytest.raises(ValueError, match="lenet-5 needs larger images: 15x20 shrinks to nothing"):
        build_network(configs.override(configs.dense_config("lenet-5"), image_shape=(15, 20)))
    assert build_network(configs.override(configs.dense_config("lenet-5"), image_shape=(16, 16)))


def test_pruned_config_has_no_dropout_and_biases_start_at_init_bias():
    model = build_network(configs.PrunedConfig())
    assert not any("dropout" in layer.name for layer in model.layers)
    np.testing.assert_allclose(weight_layers(model)[0].bias.numpy(), 0.1)


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_byte_dropout_drops_the_rate_and_rescales(rate):
    layer = ByteDropout(rate, seed=1)
    out = layer(np.ones((200, 512), np.float32), training=True).numpy()
    assert abs(np.mean(out == 0) - rate) < 0.01
    np.testing.assert_allclose(out[out != 0], 1 / (1 - rate))
    np.testing.assert_array_equal(layer(np.ones((2, 4), np.float32), training=False), 1.0)


def test_byte_dropout_rejects_a_rate_of_one():
    with pytest.raises(ValueError, match="dropout rate must be in"):
        ByteDropout(1.0)


@pytest.mark.parametrize("network, image_shape, classes, expected", [
    ("mlp", (28, 28), 10, 669_706), ("lenet-300-100", (28, 28), 10, 266_610),
    ("lenet-5", (28, 28), 10, 431_080), ("lenet-5", (17, 23), 3, None),
    ("mlp", (182, 182), 10, None)])
def test_parameter_count_is_known_before_the_network_is_built(network, image_shape, classes,
                                                             expected):
    config = configs.override(configs.dense_config(network), image_shape=image_shape,
                              num_classes=classes)
    assert parameter_count(config) == (expected or build_network(config).count_params())
    if expected:
        assert build_network(config).count_params() == expected

