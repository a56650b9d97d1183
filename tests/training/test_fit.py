import keras
import numpy as np
import pytest

import configs
from pruning import get_masks, prune_low_magnitude
from tests.helpers import TINY, tiny_data, tiny_model
from training.fit import (TrainingDiverged, check_memory, check_shift, dataset, fit,
                          soft_targets)
from utils import memory


def quiet(*_):
    pass


def test_learning_rate_schedule_follows_the_epoch_boundaries():
    rates = [configs.learning_rate(configs.DenseConfig(), e) for e in range(25)]
    assert rates[:10] == [1e-2] * 10 and rates[10:20] == [1e-3] * 10 and rates[20:] == [1e-4] * 5


def test_training_lowers_the_loss_and_logs_each_epoch():
    model, optimizer = tiny_model()
    lines = []
    config = configs.override(TINY, epochs=5, dropout=0.0, lr_values=(0.1,), lr_boundaries=())
    history = fit(model, optimizer, config, tiny_data(), log=lines.append)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5] and len(lines) == 5
    assert lines[0].startswith("epoch  1/5  lr 1e-01  train acc")


def test_fit_follows_the_learning_rate_schedule():
    model, optimizer = tiny_model()
    config = configs.override(TINY, epochs=3, lr_boundaries=(1, 2), lr_values=(0.1, 0.01, 0.001))
    history = fit(model, optimizer, config, tiny_data(), log=quiet)
    assert [h["lr"] for h in history] == [np.float32(0.1), np.float32(0.01), np.float32(0.001)]


def lit_pixels(batches):
    """(row, column, label) of each image's one lit pixel, over all batches of one epoch."""
    out = []
    for x, y in batches:
        x = x.numpy().reshape(len(x), 6, 5)
        assert (np.sort(x.reshape(len(x), -1), axis=1)[:, -2:] == [0, 1]).all()  # moved whole
        rows, cols = np.nonzero(x.max(axis=2))[1], np.nonzero(x.max(axis=1))[1]
        out += zip(rows, cols, y.numpy())
    return np.array(out)


def test_shifted_batches_move_each_image_by_whole_pixels_within_the_shift():
    """An image of 6x5 pixels with one lit at (row 3, column 2), labelled with its index: with
    shift 0 every image comes back as it is; with shift 1 each lit pixel lands one of -1, 0, 1
    away in each direction, every move occurs, and the moves differ from epoch to epoch."""
    n = 400
    x = np.zeros((n, 6, 5), np.float32)
    x[:, 3, 2] = 1
    x, y = x.reshape(n, 30), np.arange(n)
    still = lit_pixels(dataset(x, y, 50, seed=0))
    assert sorted(still[:, 2]) == list(range(n)) and (still[:, :2] == [3, 2]).all()
    batches = dataset(x, y, 50, seed=0, shift=1, image_shape=(6, 5))
    first, second = lit_pixels(batches), lit_pixels(batches)
    assert sorted(first[:, 2]) == list(range(n))  # every image once, with its own label
    for epoch in first, second:
        assert set(epoch[:, 0]) == {2, 3, 4} and set(epoch[:, 1]) == {1, 2, 3}
    by_image = [epoch[np.argsort(epoch[:, 2]), :2] for epoch in (first, second)]
    assert (by_image[0] != by_image[1]).any()


@pytest.mark.parametrize("weight, expected", [
    (0.0, [[0, 1, 0], [1, 0, 0]]), (1.0, [[0.5, 0.25, 0.25]] * 2),
    (0.5, [[0.25, 0.625, 0.125], [0.75, 0.125, 0.125]])])
def test_soft_targets_mix_each_label_with_the_teachers_probabilities(weight, expected):
    """A teacher giving every image the probabilities 1/2, 1/4, 1/4: labels 1 and 0 become
    weight x those + (1 - weight) x one-hot; each row sums to 1."""
    def teacher(images, training):
        assert not training
        return keras.ops.log(keras.ops.ones((len(images), 1)) * np.array([[2.0, 1.0, 1.0]]))
    targets = soft_targets(teacher, weight, 3)(np.zeros((2, 4), np.float32), np.array([1, 0]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(targets), expected, atol=1e-6)


@pytest.mark.parametrize("shape, shift, refused", [
    ((28, 28), 0, False), ((28, 28), 27, False), ((28, 28), 28, True), ((6, 5), 4, False),
    ((6, 5), 5, True), ((6, 5), 100, True)])
def test_a_shift_must_be_smaller_than_both_sides_of_the_images(shape, shift, refused):
    config = configs.override(TINY, image_shape=shape, shift=shift)
    if refused:
        with pytest.raises(ValueError, match=rf"--shift {shift}: the images are "
                                             rf"{shape[0]}x{shape[1]} pixels; .*\(at most "
                                             rf"{min(shape) - 1}\)"):
            check_shift(config)
    else:
        check_shift(config)


def test_weight_decay_adds_its_gradient_to_kernels_only():
    """One plain SGD step with decay d moves every kernel by an extra -lr * 2d * w, biases not."""
    after = {}
    for decay in (0.0, 0.5):
        config = configs.override(TINY, dropout=0.0, momentum=0.0, epochs=1, batch_size=60,
                                  weight_decay=decay, lr_values=(0.1,), lr_boundaries=())
        model, _ = tiny_model(config)
        start = [v.numpy() for v in model.trainable_variables]
        fit(model, keras.optimizers.SGD(0.1), config, tiny_data(), log=quiet)
        after[decay] = [v.numpy() for v in model.trainable_variables]
    for w0, plain, decayed in zip(start, after[0.0], after[0.5]):
        extra = -0.1 * 2 * 0.5 * w0 if w0.ndim == 2 else 0.0
        np.testing.assert_allclose(decayed - plain, extra, atol=1e-5)


def test_fine_tuning_a_pruned_network_keeps_its_zeros_and_logs_sparsity():
    model, optimizer = tiny_model()
    data = tiny_data()
    fit(model, optimizer, TINY, data, log=quiet)  # leaves non-zero momentum everywhere
    masks = get_masks(prune_low_magnitude(model, "threshold", 0.2))
    nonzero_before = sum(np.count_nonzero(l.kernel) for l in model.layers if hasattr(l, "kernel"))
    history = fit(model, optimizer, configs.override(TINY, epochs=3), data, log=quiet)
    for layer in model.layers:
        if layer.name in masks:
            assert np.all(layer.kernel.numpy()[~masks[layer.name]] == 0.0)
    assert sum(np.count_nonzero(l.kernel) for l in model.layers if hasattr(l, "kernel")) == \
        nonzero_before
    kept = sum(m.sum() for m in get_masks(model).values())
    total = sum(m.size for m in get_masks(model).values())
    assert history[-1]["sparsity"] == 1 - kept / total


def test_a_loss_that_becomes_nan_stops_training_with_one_clear_error():
    model, optimizer = tiny_model()
    data = tiny_data()
    x, y = data["train"]
    data["train"] = (x * np.float32(1e30), y)  # pixels of 1e30: the logits overflow
    with pytest.raises(TrainingDiverged, match="the loss became (nan|inf) in epoch 1, step .*"
                                               "pixels of tiny seed 0 range from .* to 1e\\+30"):
        fit(model, optimizer, TINY, data, log=quiet)


def test_a_network_too_large_for_the_memory_is_refused_before_it_is_built(monkeypatch):
    data = tiny_data()
    check_memory(10 ** 6, data, "mlp")  # 24 MB: fits
    monkeypatch.setattr(memory, "available_bytes", lambda: 2 ** 30)
    with pytest.raises(ValueError, match="training mlp \\(100,000,000 parameters for 4x5 images "
                                         "and 3 classes\\) on 60 images of tiny seed 0 needs "
                                         "about 2.2 GiB of memory, 1.0 GiB available"):
        check_memory(10 ** 8, data, "mlp")


def test_a_backup_that_cannot_be_read_back_is_one_line_naming_it(tmp_path):
    """A weights file cut short as it was written (no earlier one to fall back to): one
    CheckpointError naming the folder, not h5py's error."""
    from utils.errors import CheckpointError
    (tmp_path / "latest.weights.h5").write_bytes(b"\x89HDF\r\n cut short")
    (tmp_path / "training_metadata.json").write_text('{"epoch": 1}')
    model, optimizer = tiny_model()
    with pytest.raises(CheckpointError, match=f"{tmp_path}/ could not be read back .*: it is "
                                              f"removed; rerun to start afresh"):
        fit(model, optimizer, TINY, tiny_data(), log=quiet, backup_dir=tmp_path)
