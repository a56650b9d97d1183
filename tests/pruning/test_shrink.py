"""pruning.shrink: the structurally pruned model rebuilt smaller, with the same outputs; the
expected shapes are counted by hand from the masks, the outputs compared with the masked model's."""
import re

import keras
import numpy as np
import pytest

import pruning

RNG = np.random.default_rng(0)


def outputs_match(model, small, x, atol=1e-5):
    big = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(small(x, training=False)), big,
                               atol=atol)


def kept_units(model, name):
    """Output units of `name` with a non-zero weight, read from the weights."""
    kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel.value)
    return int(kernel.reshape(-1, kernel.shape[-1]).any(axis=0).sum())


def kept_inputs(model, name):
    kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel.value)
    return int(np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1).any(axis=1).sum())


def mlp(activation="relu"):
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((20,), name="pixels"),
        keras.layers.Dense(16, activation, name="fc1", bias_initializer="random_normal"),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(12, "tanh", name="fc2", bias_initializer="random_normal"),
        keras.layers.Dense(3, name="out")])


def test_a_sequential_mlp_loses_its_pruned_units_and_inputs():
    model = mlp()
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, layers=["fc1", "fc2"],
                                pattern="units")
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.25, layers=["fc1"], pattern="inputs")
    small = pruning.shrink(model)
    assert isinstance(small, keras.Sequential)
    units = kept_units(model, "fc1"), kept_units(model, "fc2")
    assert units == (8, 6)
    pixels = kept_inputs(model, "fc1")
    assert [tuple(w.shape) for w in small.weights] == [
        (pixels, 8), (8,), (8, 6), (6,), (6, 3), (3,)]
    # fc2's pruned units output tanh(bias) != 0: folded into out's bias
    outputs_match(model, small, RNG.random((40, 20), np.float32))
    assert not any(isinstance(w.constraint, pruning.PruningMask) for w in small.weights)


def test_pruned_inputs_of_the_next_layer_remove_the_units_that_feed_them():
    model = mlp()
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="inputs")
    small = pruning.shrink(model)
    sizes = [tuple(small.get_layer(n).kernel.shape) for n in ("fc1", "fc2", "out")]
    assert sizes == [(10, 8), (8, 6), (6, 3)]  # half of each layer's inputs
    fc1 = keras.ops.convert_to_numpy(model.get_layer("fc1").kernel.value)
    assert small.get_layer("fc1_inputs").indices == np.flatnonzero(fc1.any(axis=1)).tolist()
    outputs_match(model, small, RNG.random((40, 20), np.float32))


def conv_net(padding="valid"):
    """Functional: two conv branches (one with BatchNormalization), Concatenate, pooling,
    Flatten, Dense."""
    keras.utils.set_random_seed(2)
    image = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(8, 3, name="a", bias_initializer="random_normal")(image)
    a = keras.layers.BatchNormalization(name="bn")(a)
    a = keras.layers.ReLU()(a)
    b = keras.layers.Conv2D(6, 3, activation="relu", name="b")(image)
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(10, 3, padding=padding, name="c")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(image, keras.layers.Dense(4, name="out")(h))
    bn = model.get_layer("bn")
    bn.set_weights([RNG.random(w.shape).astype(np.float32) + 0.5 for w in bn.get_weights()])
    return model


def test_a_functional_conv_net_with_batch_norm_and_concatenate():
    model = conv_net()
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, layers=["a", "b", "c"],
                                pattern="units")
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, layers=["out"], pattern="inputs")
    small = pruning.shrink(model)
    assert small.get_layer("a").kernel.shape == (3, 3, 3, 4)
    assert [w.shape for w in small.get_layer("bn").weights] == [(4,)] * 4
    assert small.get_layer("b").kernel.shape == (3, 3, 3, 3)
    assert small.get_layer("c").kernel.shape == (3, 3, 7, 5)
    # out's kept inputs that c's kept filters produce, gathered after the Flatten
    out = keras.ops.convert_to_numpy(model.get_layer("out").kernel.value)
    c = keras.ops.convert_to_numpy(model.get_layer("c").kernel.value).any(axis=(0, 1, 2))
    assert small.get_layer("out").kernel.shape == (int((out.any(axis=1) & np.tile(c, 9)).sum()), 4)
    outputs_match(model, small, RNG.random((5, 12, 12, 3), np.float32))
    assert small.count_params() < model.count_params() / 2


def test_unused_image_channels_are_gathered_away_before_a_conv():
    keras.utils.set_random_seed(7)
    image = keras.Input((8, 8, 4))
    h = keras.layers.Conv2D(5, 3, padding="same", name="conv")(image)
    model = keras.Model(image, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(h)))
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, layers=["conv"], pattern="inputs")
    small = pruning.shrink(model)
    kept = keras.ops.convert_to_numpy(model.get_layer("conv").kernel.value).any(axis=(0, 1, 3))
    assert small.get_layer("conv_inputs").indices == np.flatnonzero(kept).tolist()
    assert small.get_layer("conv").kernel.shape == (3, 3, 2, 5)
    outputs_match(model, small, RNG.random((3, 8, 8, 4), np.float32))


def test_a_same_padded_conv_keeps_a_constant_channel_and_says_so():
    model = conv_net(padding="same")
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, layers=["a"], pattern="units")
    # a pruned filter outputs its bias; after BatchNormalization and ReLU, a same-padded conv
    # can drop it only where that is 0
    a = model.get_layer("a")
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    constant = np.maximum(0, gamma * (a.bias.numpy() - mean) / np.sqrt(var + 1e-3) + beta)
    pruned = ~keras.ops.convert_to_numpy(a.kernel.value).any(axis=(0, 1, 2))
    stays = int((pruned & (constant != 0)).sum())
    assert 0 < stays < 4
    with pytest.warns(UserWarning, match=rf"kept {stays} pruned units of a: they feed c, whose "
                                         rf"'same' padding"):
        small = pruning.shrink(model)
    assert small.get_layer("a").kernel.shape[-1] == 4 + stays
    outputs_match(model, small, RNG.random((5, 12, 12, 3), np.float32))


def test_a_residual_add_prunes_the_same_channels_on_both_sides():
    keras.utils.set_random_seed(4)
    x = keras.Input((10,))
    h = keras.layers.Dense(8, "relu", name="h")(x)
    r1 = keras.layers.Dense(8, name="r1")(h)
    r2 = keras.layers.Dense(8, name="r2")(h)
    s = keras.layers.Add(name="add")([r1, r2])
    model = keras.Model(x, keras.layers.Dense(2, name="out")(keras.layers.ReLU()(s)))
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, layers=["out"], pattern="inputs")
    # r1 also loses units: they are needed on r2's side, so they must stay on both, and the
    # warning says why
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.75, layers=["r1"], pattern="units")
    with pytest.warns(UserWarning, match=r"kept \d pruned units of r1: they feed add \(Add\), "
                                         r"whose other inputs keep those channels$"):
        small = pruning.shrink(model)
    assert small.get_layer("r1").kernel.shape == small.get_layer("r2").kernel.shape == (8, 4)
    assert small.get_layer("out").kernel.shape == (4, 2)
    outputs_match(model, small, RNG.random((9, 10), np.float32))


def test_lenet5_shrinks_to_its_kept_filters_and_units():
    keras.utils.set_random_seed(5)
    model = keras.Sequential([
        keras.Input((784,)), keras.layers.Reshape((28, 28, 1)),
        keras.layers.Conv2D(20, 5, name="conv1"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(50, 5, name="conv2"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(500, "relu", name="fc1"),
        keras.layers.Dense(10, name="fc2")])
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.6, layers=["conv1", "conv2", "fc1"],
                                pattern="units")
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, layers=["fc2"], pattern="inputs")
    small = pruning.shrink(model)
    # fc1's units: those it kept (their bias is 0, so a pruned one outputs relu(0) = 0) that fc2
    # still reads
    fc1 = keras.ops.convert_to_numpy(model.get_layer("fc1").kernel.value).any(axis=0)
    fc2 = keras.ops.convert_to_numpy(model.get_layer("fc2").kernel.value).any(axis=1)
    units = int((fc1 & fc2).sum())
    assert [small.get_layer(n).kernel.shape for n in ("conv1", "conv2", "fc1", "fc2")] == [
        (5, 5, 1, 8), (5, 5, 8, 20), (320, units), (units, 10)]
    assert small.count_params() == 25 * 8 + 8 + 25 * 8 * 20 + 20 + 321 * units + 10 * units + 10
    outputs_match(model, small, RNG.random((6, 784), np.float32))


def test_the_shrunk_model_saves_loads_and_prunes_further(tmp_path):
    model = mlp()
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="inputs")
    small = pruning.shrink(model)
    small.save(tmp_path / "small.keras")
    loaded = keras.models.load_model(tmp_path / "small.keras")
    x = RNG.random((30, 20), np.float32)
    outputs_match(small, loaded, x, atol=0)
    pruning.prune_low_magnitude(loaded, "layer-sparsity", 0.5)   # unstructured inside
    loaded.compile("sgd", "mse")
    loaded.fit(x, RNG.random((30, 3), np.float32), verbose=0)
    for w in pruning.pruned_weights(loaded):
        assert not keras.ops.convert_to_numpy(w.variable.value)[~w.pruning_mask.numpy()].any()


def test_a_shrunk_model_pruned_again_shrinks_again():
    """Its gathers (`<layer>_inputs`) stay as they are, and the new ones take other names."""
    model = mlp()
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="inputs")
    small = pruning.shrink(model)
    pruning.prune_low_magnitude(small, "layer-sparsity", 0.5, pattern="inputs")
    smaller = pruning.shrink(small)
    outputs_match(small, smaller, RNG.random((30, 20), np.float32))
    names = [layer.name for layer in smaller.layers]
    assert len(set(names)) == len(names) and sum(n.endswith("_inputs_1") for n in names) >= 1


def test_a_layer_it_cannot_rewrite_keeps_its_inputs_and_a_softmax_its_units():
    keras.utils.set_random_seed(6)
    x = keras.Input((10,))
    h = keras.layers.Dense(8, "relu", name="h")(x)
    h = keras.layers.LayerNormalization(name="norm")(h)
    model = keras.Model(x, keras.layers.Dense(3, "softmax", name="out")(h))
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, layers=["h"], pattern="units")
    with pytest.warns(UserWarning, match=r"kept 4 pruned units of h: they feed norm "
                                         r"\(LayerNormalization\), which shrink cannot rewrite"):
        small = pruning.shrink(model)
    assert small.get_layer("h").kernel.shape == (10, 8)
    outputs_match(model, small, RNG.random((9, 10), np.float32))


def test_pruned_units_of_a_kind_it_does_not_rewrite_or_under_softmax_are_named():
    keras.utils.set_random_seed(7)
    x = keras.Input((6, 6, 2))
    h = keras.layers.Flatten()(keras.layers.Conv2DTranspose(4, 3, name="up")(x))
    model = keras.Model(x, keras.layers.Dense(3, "softmax", name="out")(h))
    pruning.prune_low_magnitude(model, "layer-sparsity", 0.5, layers=["up", "out"],
                                pattern="units")
    with pytest.warns(UserWarning) as caught:
        small = pruning.shrink(model)
    messages = " | ".join(str(w.message) for w in caught)
    assert re.search(r"kept up \(Conv2DTranspose\) as it is, with its 2 pruned units: shrink "
                     r"rewrites Dense and Conv1D/2D/3D layers only", messages), messages
    assert re.search(r"kept \d pruned units of out: its activation softmax mixes them", messages)
    assert small.count_params() == model.count_params()
    outputs_match(model, small, RNG.random((5, 6, 6, 2), np.float32))

class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc = keras.layers.Dense(4)

    def call(self, x):
        return self.fc(x)


def shared_layer_model():
    x = keras.Input((4,))
    shared = keras.layers.Dense(4, name="twice")
    return keras.Model(x, shared(shared(x)))


def nested_model():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)], name="inner")
    x = keras.Input((4,))
    return keras.Model(x, keras.layers.Dense(2)(inner(x)))


@pytest.mark.parametrize("build, match", [
    (lambda: (lambda m: (m(np.zeros((1, 4), np.float32)), m)[1])(Subclassed()),
     "subclassed model"),
    (shared_layer_model, "layer 'twice' is used at more than one place"),
    (nested_model, "'inner' is a model inside"),
])
def test_topologies_it_cannot_rewrite_are_refused_in_one_line(build, match):
    with pytest.raises(ValueError, match=re.escape(match) if "'" in match else match) as error:
        pruning.shrink(build())
    assert "\n" not in str(error.value)
