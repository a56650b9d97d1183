"""Sparse variational dropout (pruning/variational.py): the KL's known values, the copy that
starts as the trained network, the weights training prunes where the data have nothing, and the
stripped model's exact zeros, on any graph model and both backends."""
import math
import warnings

import keras
import numpy as np
import pytest

import pruning
from pruning.variational import K1, K2, K3, kl_divergence
from tests.pruning._models import (assert_pruned_weights_are_zero, compile_, users_conv_model,
                                   users_data, values)


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


@pytest.mark.parametrize("log_alpha", [-10.0, -2.0, 0.0, 3.0, 10.0])
def test_kl_is_the_papers_approximation(log_alpha):
    # theta = 1, so log alpha = log sigma^2; the paper's eq. 14 by hand
    expected = -(K1 * sigmoid(K2 + K3 * log_alpha) - 0.5 * math.log1p(math.exp(-log_alpha)) - K1)
    kl = kl_divergence(keras.ops.ones((4,)), keras.ops.full((4,), log_alpha))
    assert float(kl) == pytest.approx(4 * expected, rel=1e-5, abs=1e-6)  # float32


def test_kl_falls_as_the_noise_grows_to_about_zero():
    kls = [float(kl_divergence(keras.ops.ones((1,)), keras.ops.full((1,), v)))
           for v in (-10.0, -5.0, 0.0, 5.0, 10.0)]
    assert kls == sorted(kls, reverse=True)
    assert kls[0] == pytest.approx(5.6358, abs=1e-3)  # 0.5 log(1 + e^10) + K1 (1 - sigmoid(...))
    assert kls[-1] < 1e-4


def logistic_data(n=2000, inputs=20, informative=3):
    """Labels from the first `informative` inputs only; the others are noise."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, inputs)).astype(np.float32)
    w = np.zeros(inputs, np.float32)
    w[:informative] = [2.0, -1.5, 1.0][:informative]
    return x, (x @ w > 0).astype(np.int32)


def trained_logistic(x, y):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(2, name="linear")])
    compile_(model, keras.optimizers.Adam(0.05))
    model.fit(x, y, epochs=5, batch_size=100, verbose=0)
    return model


def train_30_epochs(vd, x, y):
    """Train `vd` 30 epochs with Adam, the KL warmed up over 5; its masks (variational_masks).
    The rate decays to 0, so that Adam's steps stop jittering the unneeded weights around 0."""
    compile_(vd, keras.optimizers.Adam(0.02), jit=True)
    decay = keras.callbacks.LearningRateScheduler(lambda epoch: 0.02 * (1 - epoch / 30))
    vd.fit(x, y, epochs=30, batch_size=100, verbose=0, callbacks=[pruning.KLWarmup(5), decay])
    return pruning.variational_masks(vd)


def test_training_prunes_the_inputs_that_carry_nothing():
    x, y = logistic_data()
    model = trained_logistic(x, y)
    vd = pruning.variational_dropout(model, train_size=len(x), seed=1)
    kept = train_30_epochs(vd, x, y)["linear/kernel"]
    assert kept[:3].all(), kept                   # what the labels come from stays
    assert kept[3:].sum() <= 4, kept[3:]          # of 34 noise weights, at most 4 survive
    plain = pruning.strip_variational(vd)
    assert type(plain.get_layer("linear")) is keras.layers.Dense
    assert_pruned_weights_are_zero(plain, {"linear/kernel": kept})
    accuracy = np.mean(np.argmax(plain.predict(x, verbose=0), 1) == y)
    assert accuracy > 0.97


def test_group_variational_dropout_prunes_whole_units_that_shrink_removes():
    """A linear hidden layer of 6 units before a 2-class output needs one unit (the labels are
    one projection of the inputs): training with a noise per unit prunes some whole; the
    stripped model masks their columns, and `shrink` removes them, predicting what the
    variational model's inference pass does."""
    x, y = logistic_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(6, name="hidden"),
                              keras.layers.Dense(2, name="out")])
    compile_(model, keras.optimizers.Adam(0.05))
    model.fit(x, y, epochs=5, batch_size=100, verbose=0)
    # train_size 200 for 2000 examples: the prior weighs 10x, so that 30 epochs decide
    vd = pruning.variational_dropout(model, train_size=200, seed=1, pattern="units",
                                     layers=["hidden"])
    assert vd.get_layer("hidden").log_sigma2.shape == (6,)
    kept = train_30_epochs(vd, x, y)["hidden/kernel"]
    units = kept.any(axis=0)
    assert (kept == units).all()  # whole columns
    assert 1 <= units.sum() <= 4, units
    plain = pruning.strip_variational(vd)
    assert_pruned_weights_are_zero(plain, {"hidden/kernel": kept})
    assert plain.get_layer("hidden").kernel.constraint.pattern == "units"
    small = pruning.shrink(plain)
    assert small.get_layer("hidden").units == units.sum()
    np.testing.assert_allclose(small.predict(x, verbose=0), vd.predict(x, verbose=0), atol=1e-4)
    assert np.mean(np.argmax(small.predict(x, verbose=0), 1) == y) > 0.97


def test_units_of_a_conv_network_with_a_large_noise_go_whole_and_shrink_removes_them():
    """Filters and units whose noise is set far above the threshold: the inference pass, the
    stripped model and the shrunk one (without them) predict the same."""
    x, y = users_data(64)
    vd = pruning.variational_dropout(users_conv_model(), train_size=len(x), pattern="units")
    compile_(vd, keras.optimizers.Adam(1e-3))
    vd.fit(x, y, epochs=1, batch_size=32, verbose=0)  # the noisy passes run
    for name, drop in (("conv1", [0, 3]), ("conv2", [1]), ("fc", [2, 5])):
        layer = vd.get_layer(name)
        log_sigma2 = values(layer.log_sigma2)
        log_sigma2[drop] = 10.0
        layer.log_sigma2.assign(log_sigma2)
    small = pruning.shrink(pruning.strip_variational(vd))
    assert [small.get_layer(n).filters for n in ("conv1", "conv2")] == [4, 7]
    assert small.get_layer("fc").units == vd.get_layer("fc").units - 2
    np.testing.assert_allclose(small.predict(x, verbose=0), vd.predict(x, verbose=0), atol=1e-4)


def test_input_noise_prunes_the_input_features_that_carry_nothing_and_shrink_removes_them():
    """Labels from 3 of 20 inputs: a noise per input feature drops whole rows of the kernel,
    the 3 stay; the stripped model masks the rows, and `shrink` gathers the kept inputs only,
    predicting what the variational model's inference pass does."""
    x, y = logistic_data()
    model = trained_logistic(x, y)
    # train_size 200 for 2000 examples: the prior weighs 10x (20 noises, not 40)
    vd = pruning.variational_dropout(model, train_size=200, seed=1, pattern="inputs")
    assert vd.get_layer("linear").log_sigma2.shape == (20,)
    kept = train_30_epochs(vd, x, y)["linear/kernel"]
    inputs = kept.any(axis=1)
    assert (kept == inputs[:, None]).all()  # whole rows
    assert inputs[:3].all() and inputs[3:].sum() <= 3, inputs
    plain = pruning.strip_variational(vd)
    assert_pruned_weights_are_zero(plain, {"linear/kernel": kept})
    assert plain.get_layer("linear").kernel.constraint.pattern == "inputs"
    small = pruning.shrink(plain)
    assert pruning.prunable_layers(small)[0].kernel.shape == (inputs.sum(), 2)
    np.testing.assert_allclose(small.predict(x, verbose=0), vd.predict(x, verbose=0), atol=1e-4)
    assert np.mean(np.argmax(small.predict(x, verbose=0), 1) == y) > 0.97


def test_input_noise_has_the_local_reparameterisations_mean_and_variance():
    """One input row, 100,000 times, through the noisy pass: each output's sample mean is
    (x theta) @ W and its variance (x^2 sigma^2) @ W^2 (the noises independent per feature)."""
    layer = pruning.variational_dropout(
        keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False, name="d")]),
        train_size=10, seed=2, pattern="inputs").get_layer("d")
    w = np.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]], np.float32)
    theta, log_sigma2 = np.array([1.0, 2.0, 0.5], np.float32), np.log([0.25, 1.0, 4.0])
    layer.kernel.assign(w)
    layer.scale.assign(theta)
    layer.log_sigma2.assign(log_sigma2.astype(np.float32))
    x = np.array([[2.0, -1.0, 1.0]], np.float32)
    n, variance = 100_000, ((x ** 2 * np.exp(log_sigma2)) @ w ** 2)[0]  # [37.25, 20.25]
    out = keras.ops.convert_to_numpy(layer(np.repeat(x, n, 0), training=True))
    assert (abs(out.mean(0) - ((x * theta) @ w)[0]) < 5 * np.sqrt(variance / n)).all()
    np.testing.assert_allclose(out.var(0), variance, rtol=0.03)  # (its relative error: 0.45%)
    # the inference pass: the scales times the kernel, a feature of log alpha > 3 dropped
    layer.log_sigma2.assign(np.log([0.25, 1.0, 50.0]).astype(np.float32))  # log alpha 5.3
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)),
                               (x * theta * [1, 1, 0]) @ w, rtol=1e-5)


def test_input_channels_with_a_large_noise_go_and_shrink_removes_what_fed_them():
    """conv2's input channels 1 and 4 are conv1's filters 1 and 4, out's inputs 2 and 5 are
    fc's units: dropped, `shrink` removes those filters and units, predicting the same."""
    x, y = users_data(64)
    vd = pruning.variational_dropout(users_conv_model(), train_size=len(x), pattern="inputs")
    compile_(vd, keras.optimizers.Adam(1e-3))
    vd.fit(x, y, epochs=1, batch_size=32, verbose=0)  # the noisy passes run
    assert vd.get_layer("conv2").log_sigma2.shape == (6,)
    for name, drop in (("conv2", [1, 4]), ("out", [2, 5])):
        layer = vd.get_layer(name)
        log_sigma2 = values(layer.log_sigma2)
        log_sigma2[drop] = 10.0
        layer.log_sigma2.assign(log_sigma2)
    small = pruning.shrink(pruning.strip_variational(vd))
    assert small.get_layer("conv1").filters == 4 and small.get_layer("fc").units == 14
    np.testing.assert_allclose(small.predict(x, verbose=0), vd.predict(x, verbose=0), atol=1e-4)


def test_the_pattern_must_be_a_weight_a_unit_or_an_input_and_not_of_a_grouped_conv():
    with pytest.raises(ValueError, match="pattern must be one of"):
        pruning.variational_dropout(users_conv_model(), train_size=10, pattern="1x4")
    grouped = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(4, 3, groups=2,
                                                                           name="g")])
    with pytest.raises(ValueError, match="pattern='inputs': 'g' is a grouped convolution"):
        pruning.variational_dropout(grouped, train_size=10, pattern="inputs")
    assert pruning.variational_dropout(grouped, train_size=10, pattern="units")


@pytest.mark.parametrize("policy, pattern", [("mixed_float16", "unstructured"),
                                             ("mixed_float16", "units"),
                                             ("mixed_float16", "inputs"), ("float64", "inputs")])
def test_mixed_float16_and_float64_train_strip_and_shrink(policy, pattern):
    """Under mixed_float16 the noisy pass runs in float16 (its variance in float32), under
    float64 in float64 (both failed on TensorFlow: float32 noise times the deviation), with a
    finite loss and finite outputs on large inputs, and the stripped, shrunk model predicts
    what the variational one does."""
    if policy == "float64" and keras.backend.backend() == "jax":
        pytest.skip("float64 on JAX needs JAX_ENABLE_X64 (test_training_setups)")
    x, y = logistic_data(256, 12)
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, "relu", name="h"),
                                  keras.layers.Dense(2, name="o", dtype="float32")])
        vd = pruning.variational_dropout(model, train_size=256, pattern=pattern, layers=["h"])
        vd.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        history = vd.fit(x, y, epochs=2, batch_size=64, verbose=0)
        # inputs whose squares float16 cannot hold (above 256): the variance is wider
        noisy = vd(x[:8] * 400 + 300, training=True)
        assert np.isfinite(keras.ops.convert_to_numpy(noisy)).all()
        small = pruning.shrink(pruning.strip_variational(vd))
        np.testing.assert_allclose(small.predict(x, verbose=0), vd.predict(x, verbose=0),
                                   atol=1e-2)  # float16 kernels, rounded differently
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert np.isfinite(history.history["loss"]).all()


def test_the_copy_starts_as_the_trained_network_and_leaves_it_alone():
    model = users_conv_model()
    x, y = users_data()
    for layer in model.layers:  # no weight so small that log alpha > 3 prunes it from the start
        if layer.weights:
            k = values(layer.kernel)
            layer.kernel.assign(np.where(np.abs(k) < 0.01, 0.01, k))
    before = [w.copy() for w in model.get_weights()]
    vd = pruning.variational_dropout(model, train_size=len(x))
    assert [type(l).__name__ for l in vd.layers if l.weights] == [
        "VariationalConv2D", "VariationalConv2D", "VariationalDense", "VariationalDense"]
    np.testing.assert_allclose(vd.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    compile_(vd, keras.optimizers.Adam(1e-3))
    vd.fit(x, y, epochs=1, batch_size=32, verbose=0)  # the noisy conv and dense passes run
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_kl_warmup_raises_the_weight_each_epoch():
    x, y = users_data(64)
    vd = pruning.variational_dropout(users_conv_model(), train_size=len(x))
    compile_(vd, keras.optimizers.Adam(1e-3))
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
        float(values(vd.get_layer("fc").kl_weight))))
    vd.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[pruning.KLWarmup(3), record])
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])


def test_kl_is_added_to_the_training_loss():
    x, y = users_data(64)
    model = users_conv_model()
    vd = pruning.variational_dropout(model, train_size=1)  # a KL far larger than the data loss
    compile_(vd, keras.optimizers.SGD(0.0))
    loss = vd.fit(x, y, epochs=1, batch_size=64, verbose=0).history["loss"][0]
    kl = sum(float(kl_divergence(l.kernel, l.log_sigma2))
             for l in pruning.variational.variational_layers(vd).values())
    assert loss == pytest.approx(kl, rel=0.01)


def test_an_earlier_pruning_stays_and_the_stripped_mask_nests_in_it(tmp_path):
    x, y = logistic_data(400)
    model = trained_logistic(x, y)
    first = pruning.get_masks(pruning.prune_low_magnitude(model, "layer-sparsity", 0.5))
    vd = pruning.variational_dropout(model, train_size=len(x), seed=2)
    compile_(vd, keras.optimizers.Adam(0.02))
    vd.fit(x, y, epochs=5, batch_size=100, verbose=0)
    assert_pruned_weights_are_zero(vd, first)
    pruning.strip_variational(vd, into=model)  # into the original, in place
    masks = pruning.get_masks(model)
    assert not (masks["linear/kernel"] & ~first["linear/kernel"]).any()
    compile_(model, keras.optimizers.Adam(0.05))
    model.fit(x, y, epochs=2, verbose=0)
    assert_pruned_weights_are_zero(model, masks)
    model.save(tmp_path / "stripped.keras")
    loaded = keras.models.load_model(tmp_path / "stripped.keras")
    np.testing.assert_array_equal(pruning.get_masks(loaded)["linear/kernel"],
                                  masks["linear/kernel"])


def test_saved_and_loaded_it_predicts_and_prunes_the_same(tmp_path):
    x, y = users_data(64)
    vd = pruning.variational_dropout(users_conv_model(), train_size=len(x), threshold=2.0)
    compile_(vd, keras.optimizers.Adam(1e-2))
    vd.fit(x, y, epochs=2, batch_size=32, verbose=0)
    vd.save(tmp_path / "vd.keras")
    loaded = keras.models.load_model(tmp_path / "vd.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), vd.predict(x, verbose=0),
                               atol=1e-6)
    for key, mask in pruning.variational_masks(vd).items():
        np.testing.assert_array_equal(pruning.variational_masks(loaded)[key], mask)
    assert loaded.get_layer("fc").threshold == 2.0


def test_nested_models_and_layer_choice():
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, name="inner_fc")],
                             name="block")
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(2, name="head")(inner(inputs))
    model = keras.Model(inputs, outputs)
    vd = pruning.variational_dropout(model, train_size=10)
    assert sorted(pruning.variational.variational_layers(vd)) == ["block/inner_fc", "head"]
    only = pruning.variational_dropout(model, train_size=10, layers=["head"])
    assert list(pruning.variational.variational_layers(only)) == ["head"]
    stripped = pruning.strip_variational(vd)
    assert sorted(pruning.get_masks(stripped)) == ["block/inner_fc/kernel", "head/kernel"]


def test_what_it_cannot_convert_is_named_or_refused():
    inputs = keras.Input((10, 4))
    h = keras.layers.Conv1D(3, 2, padding="causal", name="causal")(inputs)
    h = keras.layers.EinsumDense("btc,cd->btd", (10, 5), name="einsum")(h)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vd = pruning.variational_dropout(model, train_size=10)
    assert any("causal/kernel" in str(w.message) and "einsum/kernel" in str(w.message)
               for w in caught)
    assert list(pruning.variational.variational_layers(vd)) == ["head"]
    with pytest.raises(ValueError, match="cannot get variational dropout"):
        pruning.variational_dropout(model, train_size=10, layers=["einsum"])
    with pytest.raises(ValueError, match="list of layer names"):
        pruning.variational_dropout(model, train_size=10, layers="head")
    with pytest.raises(ValueError, match="train_size"):
        pruning.variational_dropout(model, train_size=0)
    with pytest.raises(ValueError, match="no variational layer"):
        pruning.strip_variational(model)
    norm_only = keras.Sequential([keras.Input((4,)), keras.layers.LayerNormalization()])
    with pytest.raises(ValueError, match="nothing to convert"):
        pruning.variational_dropout(norm_only, train_size=10)


def test_a_subclassed_model_is_refused_in_one_line():
    class Mine(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    model = Mine()
    model(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="subclassed"):
        pruning.variational_dropout(model, train_size=10)


@pytest.mark.parametrize("threshold", [math.nan, math.inf, "3", True])
def test_a_threshold_that_is_not_a_finite_number_is_refused(threshold):
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        pruning.variational_dropout(users_conv_model(), train_size=10, threshold=threshold)


def test_numpy_numbers_are_accepted_and_saved_as_plain_ones(tmp_path):
    """Integer and real arguments of any type (NumPy's, from len(x) of an array's shape or a
    config) are accepted, and the copy still saves (its config holds plain numbers)."""
    vd = pruning.variational_dropout(users_conv_model(), train_size=np.int64(10),
                                     threshold=np.float32(3.0))
    pruning.KLWarmup(np.int64(2))
    vd.save(tmp_path / "vd.keras")
    assert keras.models.load_model(tmp_path / "vd.keras").get_layer("fc").train_size == 10


def test_stripping_a_layer_pruned_to_nothing_says_so():
    """log alpha above the threshold everywhere in one layer: every weight of it goes, with a
    warning naming it, not an all-zero layer returned without a word."""
    vd = pruning.variational_dropout(users_conv_model(), train_size=10)
    vd.get_layer("fc").log_sigma2.assign(np.full(vd.get_layer("fc").log_sigma2.shape, 30.0))
    with pytest.warns(UserWarning, match=r"prunes every weight of \['fc/kernel'\]"):
        plain = pruning.strip_variational(vd)
    assert not values(plain.get_layer("fc").kernel).any()
    assert values(plain.get_layer("out").kernel).any()
