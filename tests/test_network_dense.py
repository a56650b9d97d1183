import keras
import numpy as np
import pytest

import configs
from networks.network_dense import (ByteDropout, architecture, build_network, check_data,
                                    load_for_fine_tuning, load_pruned, parameter_count,
                                    weight_layers, with_data)
from tests.helpers import tiny_data, tiny_model, write_checkpoint
from utils.checkpoints import CheckpointError, stage_output, write_json
from pruning import prune_low_magnitude


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


def test_a_checkpoint_of_another_network_is_refused_naming_the_flag(tmp_path):
    write_checkpoint(tmp_path / "dense", "train_network_dense.py", *tiny_model())
    with pytest.raises(CheckpointError, match="holds a mlp network, not lenet-5: pass --network "
                                              "mlp"):
        load_for_fine_tuning(tmp_path / "dense", configs.pruned_config("lenet-5"))


def test_data_of_another_shape_than_the_checkpoints_is_refused(tmp_path):
    data = dict(tiny_data(), image_shape=(5, 4))
    with pytest.raises(CheckpointError, match="trained on 4x5 images with 3 classes; this data "
                                              "has 5x4 images with 3 classes"):
        check_data(data, configs.override(configs.DenseConfig(), image_shape=(4, 5),
                                          num_classes=3), tmp_path)


def test_other_data_of_the_same_shape_is_refused_unless_allowed(tmp_path, capsys):
    trained_on, other = tiny_data(seed=0), tiny_data(seed=1)
    config = with_data(configs.DenseConfig(), trained_on)
    assert check_data(trained_on, config, tmp_path) == config
    with pytest.raises(CheckpointError, match=f"{tmp_path}/ was trained on other data \\(tiny "
                                              f"seed 0, sha256 .{{12}}\\) than this run's \\(tiny "
                                              f"seed 1.*--allow-other-data"):
        check_data(other, config, tmp_path)
    assert check_data(other, config, tmp_path, allow_other=True).data_source == "tiny seed 1"
    legacy = configs.override(config, data_sha256="")  # written before fingerprints
    check_data(other, legacy, tmp_path)
    assert "records no data fingerprint" in capsys.readouterr().err


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
                                              r"builds 20-512-512-3 \(.*hidden_sizes"):
        load_for_fine_tuning(tmp_path / "dense", configs.PrunedConfig())


def test_load_pruned_returns_masks_that_match_the_kernels(tmp_path):
    model, optimizer = tiny_model()
    masks = {key.removesuffix("/kernel"): mask  # load_pruned keys them by layer name
             for key, mask in prune_low_magnitude(model, "threshold", 0.2).items()}
    write_checkpoint(tmp_path / "pruned", "prune_network.py", model, optimizer)
    loaded, loaded_masks, config = load_pruned(tmp_path / "pruned")
    assert (config.image_shape, config.num_classes) == ((4, 5), 3)
    assert loaded_masks.keys() == masks.keys()
    for name, mask in masks.items():
        np.testing.assert_array_equal(loaded_masks[name], mask)


@pytest.mark.parametrize("fault, match", [
    ("no masks", "masks on \\[\\], not on every weight layer"),
    ("fewer masks", "masks on \\['fc1', 'fc2'\\], not on every weight layer"),
    ("non-zero under mask", "non-zero weights where its masks prune them \\(fc1\\)")])
def test_load_pruned_refuses_a_checkpoint_whose_masks_do_not_fit(tmp_path, fault, match):
    model, optimizer = tiny_model()
    if fault != "no masks":
        prune_low_magnitude(model, "threshold", 0.2, layers=None if fault != "fewer masks"
                            else ["fc1", "fc2"])
    if fault == "non-zero under mask":
        weight_layers(model)[0].kernel.assign(np.ones(weight_layers(model)[0].kernel.shape))
    write_checkpoint(tmp_path / "pruned", "prune_network.py", model, optimizer)
    with pytest.raises(CheckpointError, match=match + ".*rerun prune_network.py"):
        load_pruned(tmp_path / "pruned")


@pytest.mark.parametrize("saved_with", ["Adam", "no optimizer", "SGD without momentum"])
def test_a_checkpoint_without_sgd_momentum_loads_with_fresh_momentum(tmp_path, saved_with,
                                                                     capsys):
    model, _ = tiny_model()
    optimizer = {"Adam": keras.optimizers.Adam(), "no optimizer": None,
                 "SGD without momentum": keras.optimizers.SGD(0.1)}[saved_with]
    with stage_output(tmp_path / "dense", "train_network_dense.py") as out:
        if optimizer:
            model.compile(optimizer)
            optimizer.build(model.trainable_variables)
        model.save(out / "model.keras")
        write_json(out / "config.json", {"config": configs.override(
            configs.DenseConfig(), image_shape=(4, 5), num_classes=3, hidden_sizes=(16, 8))})
    config = configs.override(configs.pruned_config("mlp"), hidden_sizes=(16, 8))
    loaded, optimizer, _ = load_for_fine_tuning(tmp_path / "dense", config)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all(not v.numpy().any() for v in optimizer.momentums)
    assert "holds no SGD momentum" in capsys.readouterr().err


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
