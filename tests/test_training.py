import keras
import numpy as np

import configs
from tests.helpers import TINY, tiny_data, tiny_model
from utils.pruning import dense_kernels, prune
from utils.training import Trainer, fit


def quiet(*_):
    pass


def test_learning_rate_schedule_follows_the_epoch_boundaries():
    rates = [configs.learning_rate(configs.DenseConfig(), e) for e in range(25)]
    assert rates[:10] == [1e-2] * 10 and rates[10:20] == [1e-3] * 10 and rates[20:] == [1e-4] * 5


def test_training_lowers_the_loss():
    model, optimizer = tiny_model()
    history, _ = fit(model, optimizer, configs.override(TINY, epochs=5), tiny_data(), log=quiet)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_weight_decay_adds_its_gradient_to_kernels_only():
    """One plain SGD step with decay d moves every kernel by an extra -lr * 2d * w, biases not."""
    config = configs.override(TINY, dropout=0.0, momentum=0.0, epochs=1, batch_size=60)
    data = tiny_data()
    after = {}
    for decay in (0.0, 0.5):
        model, _ = tiny_model(config)
        start = [v.numpy() for v in model.trainable_variables]
        optimizer = keras.optimizers.SGD(0.1)
        Trainer(model, optimizer, *data["train"], weight_decay=decay).train_epoch(
            60, np.random.default_rng(0))
        after[decay] = [v.numpy() for v in model.trainable_variables]
    for w0, plain, decayed in zip(start, after[0.0], after[0.5]):
        extra = -0.1 * 2 * 0.5 * w0 if w0.ndim == 2 else 0.0
        np.testing.assert_allclose(decayed - plain, extra, atol=1e-5)


def test_masked_fine_tuning_keeps_pruned_weights_exactly_zero():
    model, optimizer = tiny_model()
    data = tiny_data()
    fit(model, optimizer, TINY, data, log=quiet)  # leaves non-zero momentum everywhere
    masks = prune(model, "threshold", 0.2, optimizer)
    nonzero_before = sum(np.count_nonzero(k) for k in dense_kernels(model))
    fit(model, optimizer, configs.override(TINY, epochs=3), data, masks=masks, log=quiet)
    for kernel in dense_kernels(model):
        w = kernel.numpy()
        assert np.all(w[~masks[kernel.path]] == 0.0)
    assert sum(np.count_nonzero(k) for k in dense_kernels(model)) == nonzero_before


def test_prune_zeroes_momentum_of_pruned_entries():
    model, optimizer = tiny_model()
    fit(model, optimizer, TINY, tiny_data(), log=quiet)
    masks = prune(model, "threshold", 0.2, optimizer)
    momentum = dict(zip((v.path for v in model.trainable_variables), optimizer.momentums))
    for path, mask in masks.items():
        assert np.all(momentum[path].numpy()[~mask] == 0.0)
        assert np.any(momentum[path].numpy()[mask] != 0.0)
