"""The reusable Keras side: pruning a model that is not ours, and the gradual schedule."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import configs
from utils import pruning_utils
from utils.pruning import GradualSchedule, dense_kernels, prune
from utils.training import Trainer, fit


def users_model():
    """A small Sequential model of the kind a user brings: not built by this repo."""
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, activation="tanh"),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])


def users_data(n=200):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    y = (np.argmax(x[:, :4], axis=1)).astype(np.int32)
    return {"train": (x, y), "validation": (x[:50], y[:50]), "test": (x[:50], y[:50])}


def test_prune_and_masked_training_on_a_users_model():
    model = users_model()
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    masks = prune(model, "layer-sparsity", 0.75, optimizer)
    assert len(masks) == 3
    config = configs.override(configs.PrunedConfig(), epochs=3, batch_size=20, lr_values=(0.05,),
                              lr_boundaries=())
    history, final = fit(model, optimizer, config, users_data(), masks=masks, log=lambda *_: None)
    for kernel in dense_kernels(model):
        w = kernel.numpy()
        assert np.all(w[~masks[kernel.path]] == 0) and np.count_nonzero(w) == masks[kernel.path].sum()
        np.testing.assert_array_equal(final[kernel.path], masks[kernel.path])
    assert history[-1]["sparsity"] == pytest.approx(0.75, abs=0.01)


def test_gradual_sparsity_follows_the_cubic_formula():
    s = GradualSchedule(final_sparsity=0.9, initial_sparsity=0.1, begin_step=100, end_step=1100)
    assert s.sparsity(0) == pytest.approx(0.1) and s.sparsity(100) == pytest.approx(0.1)
    assert s.sparsity(600) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5 ** 3)
    assert s.sparsity(850) == pytest.approx(0.9 + (0.1 - 0.9) * 0.25 ** 3)
    assert s.sparsity(1100) == pytest.approx(0.9) and s.sparsity(5000) == pytest.approx(0.9)
    assert float(s.sparsity(tf.constant(600, tf.int64))) == pytest.approx(s.sparsity(600))


def test_gradual_updates_every_frequency_steps_and_at_the_end():
    s = GradualSchedule(final_sparsity=0.5, begin_step=10, end_step=255, frequency=100)
    updates = [t for t in range(400) if bool(s.is_update_step(tf.constant(t, tf.int64)))]
    assert updates == [10, 110, 210, 255]


@pytest.mark.parametrize("criterion", ["layer-sparsity", "global-sparsity"])
def test_in_graph_masks_match_the_numpy_criterion(criterion):
    rng = np.random.default_rng(2)
    weights = [rng.normal(size=(30, 20)).astype(np.float32), rng.normal(size=(20, 5)).astype(np.float32)]
    s = GradualSchedule(final_sparsity=0.7, end_step=10, criterion=criterion)
    in_graph = s.masks([tf.constant(w) for w in weights], tf.constant(10, tf.int64))
    expected = pruning_utils.criterion_masks(weights, criterion, 0.7)
    for got, want in zip(in_graph, expected):
        np.testing.assert_array_equal(got.numpy() > 0, want)


def test_gradual_training_reaches_the_target_with_shrinking_masks():
    model = users_model()
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    dense = {k.path: np.ones(k.shape, bool) for k in dense_kernels(model)}
    schedule = GradualSchedule(final_sparsity=0.8, end_step=40, frequency=10)
    trainer = Trainer(model, optimizer, *users_data()["train"], masks=dense, schedule=schedule)
    rng, seen = np.random.default_rng(0), []
    for _ in range(5):  # 10 steps an epoch at batch 20
        trainer.train_epoch(20, rng)
        seen.append(trainer.current_masks())
    for earlier, later in zip(seen, seen[1:]):
        for path in earlier:
            assert not (later[path] & ~earlier[path]).any()
    kept = sum(m.sum() for m in seen[-1].values()) / sum(m.size for m in seen[-1].values())
    assert kept == pytest.approx(0.2, abs=0.01)
    for kernel in dense_kernels(model):
        assert np.all(kernel.numpy()[~seen[-1][kernel.path]] == 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(final_sparsity=1.0, end_step=10), "final_sparsity"),
    (dict(final_sparsity=0.5, initial_sparsity=0.6, end_step=10), "initial_sparsity"),
    (dict(final_sparsity=0.5, end_step=0), "end_step"),
    (dict(final_sparsity=0.5, end_step=10, criterion="threshold"), "criterion")])
def test_gradual_schedule_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradualSchedule(**kwargs)
