import numpy as np
import pytest

import configs
from networks.network_dense import ByteDropout, build_dense_network, dense_layers


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
