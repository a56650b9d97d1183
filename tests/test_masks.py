"""The reusable component on models this repo did not build: prune, fit, save, load, strip."""
import subprocess
import sys

import keras
import numpy as np
import pytest

from pruning import (PruningMask, get_masks, prunable_layers, prune_low_magnitude,
                     pruned_layers, strip_pruning)

TARGETS = {"conv1": 0.5, "conv2": 0.7, "fc": 0.9, "out": 0.3}


def users_conv_model():
    """A functional conv net of the kind a user brings: Conv2D, pooling, Flatten, Dense."""
    keras.utils.set_random_seed(3)
    pixels = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv1")(pixels)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="relu", name="fc")(h)
    return keras.Model(pixels, keras.layers.Dense(3, name="out")(h))


def users_data(n=160):
    rng = np.random.default_rng(0)
    x = rng.random((n, 12, 12, 1)).astype(np.float32)
    return x, (x[:, :4, :4, 0].mean(axis=(1, 2)) * 9).astype(np.int32) % 3


def compile_(model, optimizer, jit=False, steps_per_execution=1,
             loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)):
    model.compile(optimizer, loss, jit_compile=jit, steps_per_execution=steps_per_execution)


def assert_pruned_weights_are_zero(model, masks):
    for name, layer in pruned_layers(model).items():
        assert not layer.kernel.numpy()[~masks[name]].any(), name


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd-momentum", "adamw"])
def test_fit_keeps_a_conv_nets_pruned_weights_exactly_zero(optimizer, jit):
    model = users_conv_model()
    masks = prune_low_magnitude(model, "layer-sparsity", TARGETS)
    assert {n: m.sum() for n, m in masks.items()} == {  # each layer at its own target
        n: round((1 - t) * masks[n].size) for n, t in TARGETS.items()}
    compile_(model, keras.optimizers.SGD(0.1, momentum=0.9) if optimizer == "sgd-momentum" else
             keras.optimizers.AdamW(0.01, weight_decay=0.1), jit, steps_per_execution=3)
    before = {n: l.kernel.numpy().copy() for n, l in pruned_layers(model).items()}
    model.fit(*users_data(), batch_size=16, epochs=2, verbose=0)
    assert_pruned_weights_are_zero(model, masks)
    for name, layer in pruned_layers(model).items():
        assert (layer.kernel.numpy()[masks[name]] != before[name][masks[name]]).any()  # trained
        np.testing.assert_array_equal(get_masks(model)[name], masks[name])


def test_sequential_and_subclassed_models_are_pruned_too():
    class Users(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = keras.layers.Dense(8), keras.layers.Dense(2)

        def call(self, x):
            return self.out(self.hidden(x))

    sequential = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, name="a"),
                                   keras.layers.Dense(2, name="b")])
    subclassed = Users()
    subclassed(np.zeros((1, 5), np.float32))
    for model in (sequential, subclassed):
        masks = prune_low_magnitude(model, "global-sparsity", 0.5)
        assert len(masks) == 2 and len(prunable_layers(model)) == 2
        compile_(model, keras.optimizers.Adam(0.1))
        model.fit(np.ones((8, 5), np.float32), np.zeros(8, np.int32), verbose=0)
        assert_pruned_weights_are_zero(model, masks)


def test_pruning_again_nests_the_new_masks_in_the_old():
    model = users_conv_model()
    first = prune_low_magnitude(model, "global-sparsity", 0.5)
    second = prune_low_magnitude(model, "global-sparsity", 0.8)
    for name in first:
        assert not (second[name] & ~first[name]).any()
    assert isinstance(model.get_layer("fc").kernel.constraint, PruningMask)


def test_save_load_keeps_the_masks_and_training_on_keeps_the_zeros(tmp_path):
    model = users_conv_model()
    masks = prune_low_magnitude(model, "layer-sparsity", 0.6)
    compile_(model, keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(*users_data(), batch_size=16, verbose=0)
    model.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    for name, mask in get_masks(loaded).items():
        np.testing.assert_array_equal(mask, masks[name])
    loaded.fit(*users_data(), batch_size=16, verbose=0)  # resumes with the saved optimizer
    assert_pruned_weights_are_zero(loaded, masks)


def test_stripped_model_exports_a_saved_model_that_needs_nothing_of_this_repo(tmp_path):
    model = users_conv_model()
    prune_low_magnitude(model, "global-sparsity", 0.7)
    x = users_data(8)[0]
    expected = model.predict(x, verbose=0)
    strip_pruning(model)
    assert pruned_layers(model) == {} and "PruningMask" not in str(model.get_config())
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
    model.export(tmp_path / "saved_model", verbose=False)
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np, tensorflow as tf; "
              "assert not any('pruning' in m for m in sys.modules); "
              "m = tf.saved_model.load('saved_model'); "
              "np.save('y.npy', m.serve(np.load('x.npy')))")
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_depthwise_and_transposed_convolutions_are_prunable():
    model = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.DepthwiseConv2D(3, name="dw"),
                              keras.layers.Conv2DTranspose(2, 3, name="up")])
    masks = prune_low_magnitude(model, "layer-sparsity", 0.5)
    assert sorted(masks) == ["dw", "up"]
    compile_(model, keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.fit(np.ones((4, 8, 8, 2), np.float32), np.ones((4, 8, 8, 2), np.float32), verbose=0)
    assert_pruned_weights_are_zero(model, masks)


@pytest.mark.parametrize("model, kwargs, match", [
    ("no prunable", {}, "model 'pool' has no prunable layer"),
    ("conv", dict(layers=["conv9"]), r"layers: \['conv9'\] not among the prunable layers"),
    ("conv", dict(criterion="layer-sparsity", value=1.5),
     r"value \(the sparsity of criterion 'layer-sparsity'\) must be in \[0, 1\), got 1.5"),
    ("conv", dict(criterion="threshold", value=-1), "value .* must be a finite number >= 0"),
    ("conv", dict(criterion="magnitude"), "criterion must be one of"),
    ("conv", dict(criterion="global-sparsity", value={"fc": 0.5}), "value: a per-layer dict"),
    ("conv", dict(criterion="threshold", value=100.0), "removes every weight of layer conv1"),
])
def test_bad_input_is_one_value_error_naming_the_argument(model, kwargs, match):
    model = users_conv_model() if model == "conv" else keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.MaxPooling2D()], name="pool")
    with pytest.raises(ValueError, match=match):
        prune_low_magnitude(model, **kwargs)
    assert pruned_layers(model) == {}  # nothing half-done


def test_a_layer_with_its_own_constraint_is_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        2, kernel_constraint=keras.constraints.NonNeg(), name="nonneg")])
    with pytest.raises(ValueError, match="'nonneg' already has a kernel constraint"):
        prune_low_magnitude(model, "threshold", 0.1)


def test_a_numpy_scalar_value_is_accepted():
    model = users_conv_model()
    masks = prune_low_magnitude(model, "layer-sparsity", np.float32(0.5))
    assert all(m.sum() == round(0.5 * m.size) for m in masks.values())
