import numpy as np
import pytest

import configs
from networks.network_dense import (ByteDropout, build_dense_network, dense_layers,
                                    load_for_fine_tuning, load_pruned)
from tests.helpers import tiny_model, write_checkpoint
from utils.checkpoints import CheckpointError
from pruning import prune_low_magnitude


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


def test_a_checkpoint_of_another_architecture_is_refused_naming_both(tmp_path):
    write_checkpoint(tmp_path / "dense", "train_network_dense.py", *tiny_model())
    with pytest.raises(CheckpointError, match=r"dense/ holds a 20-16-8-3 network; this stage "
                                              r"builds 784-512-512-10 \(.*hidden_sizes"):
        load_for_fine_tuning(tmp_path / "dense", configs.PrunedConfig())


def test_load_pruned_returns_masks_that_match_the_kernels(tmp_path):
    model, optimizer = tiny_model()
    masks = prune_low_magnitude(model, "threshold", 0.2)
    write_checkpoint(tmp_path / "pruned", "prune_network.py", model, optimizer)
    loaded, loaded_masks = load_pruned(tmp_path / "pruned")
    assert loaded_masks.keys() == masks.keys()
    for name, mask in masks.items():
        np.testing.assert_array_equal(loaded_masks[name], mask)


@pytest.mark.parametrize("fault, match", [
    ("no masks", "masks on \\[\\], not on every Dense layer"),
    ("fewer masks", "masks on \\['fc1', 'fc2'\\], not on every Dense layer"),
    ("non-zero under mask", "non-zero weights where its masks prune them \\(fc1\\)")])
def test_load_pruned_refuses_a_checkpoint_whose_masks_do_not_fit(tmp_path, fault, match):
    model, optimizer = tiny_model()
    if fault != "no masks":
        prune_low_magnitude(model, "threshold", 0.2, layers=None if fault != "fewer masks"
                            else ["fc1", "fc2"])
    if fault == "non-zero under mask":
        dense_layers(model)[0].kernel.assign(np.ones(dense_layers(model)[0].kernel.shape))
    write_checkpoint(tmp_path / "pruned", "prune_network.py", model, optimizer)
    with pytest.raises(CheckpointError, match=match + ".*rerun prune_network.py"):
        load_pruned(tmp_path / "pruned")
