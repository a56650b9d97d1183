"""The stages' checkpoints: the network, architecture, masks, data and optimizer state, each checked
on load."""
import keras
import numpy as np
import pytest

import configs
from networks.builders import weight_layers
from pruning import get_masks, prune_low_magnitude
from tests.helpers import tiny_data, tiny_model, write_checkpoint
from training.checkpoints import check_data, load_for_fine_tuning, load_pruned, with_data
from utils.errors import CheckpointError
from utils.files import stage_output, write_json


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


def test_a_checkpoint_of_another_architecture_is_refused_naming_both(tmp_path):
    write_checkpoint(tmp_path / "dense", "train_network_dense.py", *tiny_model())
    with pytest.raises(CheckpointError, match=r"dense/ holds a 20-16-8-3 network; this stage "
                                              r"builds 20-512-512-3 \(.*hidden_sizes"):
        load_for_fine_tuning(tmp_path / "dense", configs.PrunedConfig())


def test_load_pruned_returns_masks_that_match_the_kernels(tmp_path):
    model, optimizer = tiny_model()
    masks = {key.removesuffix("/kernel"): mask  # load_pruned keys them by layer name
             for key, mask in get_masks(prune_low_magnitude(model, "threshold", 0.2)).items()}
    write_checkpoint(tmp_path / "pruned", "prune_network.py", model, optimizer)
    loaded, loaded_masks, config, _ = load_pruned(tmp_path / "pruned")
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

