"""Models of the kinds users bring, tiny data, and the one assertion every test makes: the pruned
weights are exactly zero, read from the weights themselves. Only Keras and NumPy: these tests run
with nothing but the package and a backend installed."""
import keras
import numpy as np
import pytest

import pruning


def users_conv_model():
    """A functional conv net: Conv2D, pooling, Flatten, Dense."""
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


def steps(steps_per_execution):
    """`steps_per_execution`, but 1 on PyTorch, where Keras refuses more (docs/package.md)."""
    return 1 if keras.backend.backend() == "torch" else steps_per_execution


def jit_here(jit):
    """`jit`, but skipped on PyTorch, where jit_compile is torch.compile (20-80 s a model on 2
    cores): one test there compiles (test_gradual_pruning_follows_its_schedule_inside_the_
    compiled_step), the others' eager runs cover the same masks."""
    if jit and keras.backend.backend() == "torch":
        pytest.skip("torch.compile: compiled once, in the gradual schedule's test")
    return jit


def compile_(model, optimizer, jit=None, steps_per_execution=1,
             loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)):
    """`model.compile`; `jit` None: compiled on JAX only, where without it every op runs
    eagerly, 5x slower (an epoch of the layer-kinds model: 26 s against 5 s, compile included);
    on TensorFlow and PyTorch a compile costs more than these tiny fits. On PyTorch never
    compiled (`jit_here`: torch.compile is compiled once, in its own test)."""
    if jit is None:
        jit = keras.backend.backend() == "jax"
    jit = jit and keras.backend.backend() != "torch"
    model.compile(optimizer, loss, jit_compile=jit, steps_per_execution=steps(steps_per_execution))


def values(variable):
    return keras.ops.convert_to_numpy(variable.value)


def weights_of(model):
    """{weight key: its values now}, of every prunable weight."""
    return {w.key: values(w.variable) for w in pruning.prunable_weights(model)}


def assert_pruned_weights_are_zero(model, masks):
    """Every weight that `masks` ({key: bool}) prunes is exactly 0 in `model`."""
    now = weights_of(model)
    assert set(masks) <= set(now), sorted(set(masks) - set(now))
    for key, mask in masks.items():
        assert not now[key][~mask].any(), f"{key}: a pruned weight is not zero"


def zero_fraction(array):
    return 1.0 - np.count_nonzero(array) / array.size
