import numpy as np

import configs
from networks.network_dense import build_dense_network, dense_layers
from tests.helpers import TINY, tiny_model


def test_original_network_shapes():
    model = build_dense_network(configs.DenseConfig())
    assert [layer.kernel.shape for layer in dense_layers(model)] == [
        (784, 512), (512, 512), (512, 10)]
    assert model(np.zeros((3, 784), np.float32)).shape == (3, 10)
    assert sum("dropout" in layer.name for layer in model.layers) == 2


def test_pruned_config_has_no_dropout_and_biases_start_at_init_bias():
    model = build_dense_network(configs.PrunedConfig())
    assert not any("dropout" in layer.name for layer in model.layers)
    np.testing.assert_allclose(dense_layers(model)[0].bias.numpy(), 0.1)


def test_weight_decay_is_l2_on_kernels_only():
    model, _ = tiny_model()
    model(np.zeros((1, TINY.input_size), np.float32))
    expected = TINY.weight_decay * sum(float(np.sum(np.square(l.kernel))) for l in dense_layers(model))
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)
