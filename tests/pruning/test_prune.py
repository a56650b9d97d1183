"""One-shot pruning on models this repository did not build: every order of compile / fit / prune
/ save / load / clone, every layer kind, bad input. Asserted on the weights themselves."""
import os
import re
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import pruning
from _models import (assert_pruned_weights_are_zero, compile_, jit_here, users_conv_model,
                     users_data, values, weights_of, zero_fraction)
from pruning import PruningMask, get_masks, prune_low_magnitude, strip_pruning

TARGETS = {"conv1": 0.5, "conv2": 0.7, "fc": 0.9, "out": 0.3}
TF = keras.backend.backend() == "tensorflow"


class Users(keras.Model):
    """A subclassed model: its layers come from its __init__, not from a config."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(16, name="hidden")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        return self.head(self.hidden(keras.ops.reshape(x, (-1, 144))))


def make(kind):
    if kind == "functional":
        return users_conv_model()
    keras.utils.set_random_seed(4)
    if kind == "sequential":
        return keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(16, name="a"), keras.layers.Dense(3, name="b")])
    model = Users()
    model(np.zeros((1, 12, 12, 1), np.float32))
    return model


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd-momentum", "adamw"])
def test_fit_keeps_a_conv_nets_pruned_weights_exactly_zero(optimizer, jit):
    jit = jit_here(jit)
    model = users_conv_model()
    masks = get_masks(prune_low_magnitude(model, "layer-sparsity", TARGETS))
    assert {k: m.sum() for k, m in masks.items()} == {  # each layer at its own target
        f"{n}/kernel": round((1 - t) * masks[f"{n}/kernel"].size) for n, t in TARGETS.items()}
    compile_(model, keras.optimizers.SGD(0.1, momentum=0.9) if optimizer == "sgd-momentum" else
             keras.optimizers.AdamW(0.01, weight_decay=0.1), jit, steps_per_execution=3)
    before = weights_of(model)
    model.fit(*users_data(), batch_size=16, epochs=2, verbose=0)
    assert_pruned_weights_are_zero(model, masks)
    after = weights_of(model)
    for key, mask in masks.items():
        assert (after[key][mask] != before[key][mask]).any()  # trained
        np.testing.assert_array_equal(get_masks(model)[key], mask)


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
@pytest.mark.parametrize("jit, steps_per_execution", [(False, 1), (True, 5)])
def test_train_then_prune_then_fine_tune_without_a_new_compile(kind, jit, steps_per_execution):
    """The most common workflow: the step traced by the first fit must not survive the prune."""
    jit = jit_here(jit)
    model = make(kind)
    compile_(model, keras.optimizers.Adam(0.01), jit, steps_per_execution)
    model.fit(*users_data(), batch_size=16, verbose=0)
    masks = get_masks(prune_low_magnitude(model, "layer-sparsity", 0.8))
    model.fit(*users_data(), batch_size=16, epochs=2, verbose=0)
    assert_pruned_weights_are_zero(model, masks)
    for key, mask in masks.items():
        assert zero_fraction(weights_of(model)[key]) == pytest.approx(0.8, abs=0.01), key
    again = get_masks(prune_low_magnitude(model, "layer-sparsity", 0.9))  # again, same compile
    model.fit(*users_data(), batch_size=16, verbose=0)
    assert_pruned_weights_are_zero(model, again)
    assert all(not (again[k] & ~masks[k]).any() for k in masks)


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_save_load_and_clone_keep_the_masks(kind, tmp_path):
    model = make(kind)
    masks = get_masks(prune_low_magnitude(model, "layer-sparsity", 0.6))
    compile_(model, keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(*users_data(), batch_size=16, verbose=0)
    model.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras",
                                     custom_objects={"Users": Users})
    if kind == "subclassed":  # Keras rebuilds its layers from __init__: the zeros, not the masks
        assert get_masks(loaded) == {}
        assert sorted(pruning.prune.lost_masks(loaded)) == sorted(masks)
        with pytest.warns(UserWarning, match="restore_masks"):  # its first fit says what to call
            loaded.fit(*users_data(), epochs=0, verbose=0)  # (no epoch: nothing trained back)
        assert sorted(pruning.restore_masks(loaded)) == sorted(masks)
    for key, mask in get_masks(loaded).items():
        np.testing.assert_array_equal(mask, masks[key])
    assert sorted(get_masks(loaded)) == sorted(masks)
    loaded.fit(*users_data(), batch_size=16, verbose=0)  # resumes with the saved optimizer
    assert_pruned_weights_are_zero(loaded, masks)
    if kind != "subclassed":  # clone_model of a subclassed model makes new, unpruned weights
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        compile_(clone, keras.optimizers.Adam(0.01))
        clone.fit(*users_data(), batch_size=16, verbose=0)
        assert_pruned_weights_are_zero(clone, masks)


def test_stacked_rnn_cells_keep_their_masks_through_load_and_clone_without_a_warning(tmp_path):
    """StackedRNNCells' config carries its cells' configs, constraints included."""
    cells = [keras.layers.LSTMCell(4, name="lstm"), keras.layers.GRUCell(4, name="gru")]
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.RNN(cells, name="rnn"),
                              keras.layers.Dense(2, name="out")])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        masks = get_masks(prune_low_magnitude(model, "layer-sparsity", 0.5))
    assert len(masks) == 5
    model.save(tmp_path / "stacked.keras")
    for again in (keras.models.load_model(tmp_path / "stacked.keras"),
                  keras.models.clone_model(model)):
        assert sorted(get_masks(again)) == sorted(masks)

def test_a_pattern_too_coarse_to_remove_anything_is_named():
    """Blocks larger than the kernel: one block each, and half of one rounds to none."""
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="a"),
                              keras.layers.Dense(2, name="b")])
    with pytest.warns(UserWarning, match=r"nothing pruned in \['a/kernel', 'b/kernel'\]: at "
                                         r"layer-sparsity 0.5 each holds too few"):
        masks = get_masks(prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="1000x1000"))
    assert all(mask.all() for mask in masks.values())

def test_lora_over_zeros_whose_masks_are_gone_is_named_by_restore_masks_and_the_first_fit():
    """Keras refuses enable_lora on a masked kernel, but not once the masks are gone (stripped,
    or loaded where Keras rebuilds a layer from its arguments): LoRA's product would then fill
    the zeros, and no mask can hold them."""
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="d"),
                              keras.layers.Dense(2, name="out")])
    prune_low_magnitude(model, "layer-sparsity", 0.5)
    strip_pruning(model)
    model.get_layer("d").enable_lora(2)
    with pytest.warns(UserWarning, match=r"restore_masks: \['d/kernel'\] hold exact zeros under "
                                         r"LoRA \(enable_lora\): no mask can hold them"):
        assert pruning.restore_masks(model) == ["out/kernel"]
    with pytest.warns(UserWarning, match=r"\['d/kernel'\] hold exact zeros under LoRA.*this fit "
                                         r"trains the zeros away"):
        compile_(model, keras.optimizers.SGD(0.1), loss="mse")
        model.fit(np.ones((4, 6), "float32"), np.ones((4, 2), "float32"), verbose=0)

def test_a_first_fit_warns_only_of_zeros_without_masks():
    """A pruned model with its masks, an untrained one and a zero-initialised kernel fit in
    silence; the same pruned model stripped of its masks is named, at its first fit only."""
    zero_init = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(3, kernel_initializer="zeros")])
    pruned = prune_low_magnitude(users_conv_model(), "layer-sparsity", 0.5)
    for model in (zero_init, users_conv_model(), pruned):
        compile_(model, keras.optimizers.SGD(0.01))
        with warnings.catch_warnings():
            warnings.filterwarnings("error", ".*restore_masks")
            model.fit(*users_data(), epochs=0, verbose=0)
    stripped = strip_pruning(keras.models.clone_model(pruned))
    stripped.set_weights(pruned.get_weights())
    compile_(stripped, keras.optimizers.SGD(0.01))
    with pytest.warns(UserWarning, match=r"conv1/kernel.*restore_masks"):
        stripped.fit(*users_data(), epochs=0, verbose=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*restore_masks")
        stripped.fit(*users_data(), epochs=0, verbose=0)
    frozen = strip_pruning(keras.models.clone_model(pruned))  # a frozen layer keeps its zeros
    frozen.set_weights(pruned.get_weights())
    frozen.get_layer("conv1").trainable = False
    assert "conv1/kernel" not in pruning.prune.lost_masks(frozen)
    assert "conv2/kernel" in pruning.prune.lost_masks(frozen)


def test_prune_before_compile_and_after_the_optimizer_is_built():
    model = users_conv_model()
    masks = get_masks(prune_low_magnitude(model, "global-sparsity", 0.5))
    compile_(model, keras.optimizers.Adam(0.01), jit=True)
    model.fit(*users_data(), batch_size=16, verbose=0)
    assert_pruned_weights_are_zero(model, masks)


class Block(keras.layers.Layer):
    """A user's own layer holding a Dense and a weight matrix of its own."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(8, name="inner")

    def build(self, shape):
        self.inner.build(shape)
        self.gate = self.add_weight(shape=(8, 8), name="gate")

    def call(self, x):
        return keras.ops.relu(self.inner(x)) @ self.gate


def layer_kinds_model():
    """Every layer kind the package claims, in one functional model on [batch, 6, 8] inputs."""
    keras.utils.set_random_seed(5)
    tokens = keras.Input((6,), dtype="int32")
    seq = keras.Input((6, 8))
    embedded = keras.layers.Embedding(20, 8, name="emb")(tokens)
    h = keras.layers.Add()([seq, embedded])
    h = keras.layers.Conv1D(8, 3, padding="same", name="conv")(h)
    h = keras.layers.SeparableConv1D(8, 3, padding="same", name="sep")(h)
    h = keras.layers.DepthwiseConv1D(3, padding="same", name="dw")(h)
    h = keras.layers.Conv1DTranspose(8, 3, padding="same", name="convt")(h)
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h)
    h = keras.layers.EinsumDense("abc,cd->abd", (None, 8), name="einsum")(h)
    h = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True, name="lstm"),
                                   name="bi")(h)
    h = keras.layers.GRU(8, return_sequences=True, name="gru")(h)
    h = keras.layers.SimpleRNN(8, return_sequences=True, name="rnn")(h)
    h = keras.layers.TimeDistributed(keras.layers.Dense(8, name="td_dense"), name="td")(h)
    h = Block(name="block")(h)
    h = keras.layers.Reshape((6, 8, 1))(h)
    h = keras.layers.SeparableConv2D(2, 3, padding="same", name="sep2d")(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw2d")(h)
    h = keras.layers.Conv2DTranspose(2, 3, padding="same", name="convt2d")(h)
    h = keras.layers.Conv3D(2, 1, name="conv3d")(keras.layers.Reshape((6, 8, 2, 1))(h))
    h = keras.layers.Conv3DTranspose(2, 1, name="convt3d")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model([tokens, seq], keras.layers.Dense(3, name="out")(h))


LAYER_KINDS = [  # weight key -> expected: every matrix of every claimed kind
    "emb/embeddings", "conv/kernel", "sep/depthwise_kernel", "sep/pointwise_kernel",
    "dw/kernel", "convt/kernel", "mha/query/kernel", "mha/key/kernel", "mha/value/kernel",
    "mha/attention_output/kernel", "einsum/kernel",
    "bi/forward_lstm/lstm_cell/kernel", "bi/forward_lstm/lstm_cell/recurrent_kernel",
    "bi/backward_lstm/lstm_cell/kernel", "bi/backward_lstm/lstm_cell/recurrent_kernel",
    "gru/gru_cell/kernel", "gru/gru_cell/recurrent_kernel",
    "rnn/simple_rnn_cell/kernel", "rnn/simple_rnn_cell/recurrent_kernel",
    "td/td_dense/kernel", "block/inner/kernel", "sep2d/depthwise_kernel",
    "sep2d/pointwise_kernel", "dw2d/kernel", "convt2d/kernel", "conv3d/kernel", "convt3d/kernel",
    "out/kernel"]


def kinds_data(n=32):
    rng = np.random.default_rng(1)
    return ([rng.integers(0, 20, (n, 6)).astype(np.int32), rng.random((n, 6, 8), np.float32)],
            rng.integers(0, 3, n).astype(np.int32))


def test_every_layer_kind_is_pruned_and_the_rest_is_named(tmp_path):
    model = layer_kinds_model()
    with pytest.warns(UserWarning, match=r"not pruned: block/gate \(no registered layer kind"):
        masks = get_masks(prune_low_magnitude(model, "layer-sparsity", 0.5))
    assert sorted(masks) == sorted(LAYER_KINDS)
    compile_(model, keras.optimizers.Adam(0.01), jit=True)
    model.fit(*kinds_data(), batch_size=8, verbose=0)
    assert_pruned_weights_are_zero(model, masks)
    summary = pruning.summary(model)
    rows = {r.key: r for r in summary.pruned}
    assert sorted(rows) == sorted(LAYER_KINDS)
    for key, row in rows.items():  # counted from the weights: half of each is zero
        assert row.kept == np.count_nonzero(values(model_weight(model, key)))
        assert row.sparsity == pytest.approx(0.5, abs=0.13), key
    assert [r.key for r in summary.unpruned] == ["block/gate"]
    assert "block/gate" in str(summary) and "mha/query/kernel" in str(summary)
    # The masks of layers whose config Keras saves come back with load_model, the rest from zeros
    model.save(tmp_path / "kinds.keras")
    loaded = keras.models.load_model(tmp_path / "kinds.keras", custom_objects={"Block": Block})
    restored = pruning.restore_masks(loaded)
    assert sorted(restored) == ["block/inner/kernel", "mha/attention_output/kernel",
                                "mha/key/kernel", "mha/query/kernel", "mha/value/kernel"]
    assert sorted(get_masks(loaded)) == sorted(LAYER_KINDS)
    compile_(loaded, keras.optimizers.Adam(0.01))
    loaded.fit(*kinds_data(), batch_size=8, verbose=0)
    assert_pruned_weights_are_zero(loaded, masks)


def model_weight(model, key):
    return next(w.variable for w in pruning.prunable_weights(model) if w.key == key)


def test_a_registered_user_layer_has_its_own_weights_pruned():
    class Gate(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 4), name="w")

        def call(self, x):
            return x @ self.w

    pruning.register_prunable(Gate, "w")
    model = keras.Sequential([keras.Input((6,)), Gate(name="gate")])
    masks = get_masks(prune_low_magnitude(model, "layer-sparsity", 0.5))
    assert list(masks) == ["gate/w"]
    compile_(model, keras.optimizers.Adam(0.05), loss="mse")
    model.fit(np.ones((8, 6), np.float32), np.ones((8, 4), np.float32), verbose=0)
    assert_pruned_weights_are_zero(model, masks)
    assert zero_fraction(values(model.layers[0].w)) == 0.5
    with pytest.raises(ValueError, match="attributes must be"):
        pruning.register_prunable(Gate)


@pytest.mark.parametrize("layers, chosen", [
    (["fc"], ["fc/kernel"]), (["conv1", "out/kernel"], ["conv1/kernel", "out/kernel"]),
    (re.compile("conv.*"), ["conv1/kernel", "conv2/kernel"]),
    (lambda layer: isinstance(layer, keras.layers.Dense), ["fc/kernel", "out/kernel"])])
def test_layers_takes_names_a_regex_or_a_predicate(layers, chosen):
    assert sorted(get_masks(prune_low_magnitude(users_conv_model(), "layer-sparsity", 0.5,
                                                layers=layers))) == \
        chosen


def test_pattern_2_4_keeps_two_of_every_four_inputs_through_training():
    model = users_conv_model()
    masks = get_masks(prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="2:4"))
    compile_(model, keras.optimizers.Adam(0.01))
    model.fit(*users_data(), batch_size=16, verbose=0)
    assert_pruned_weights_are_zero(model, masks)
    fc = weights_of(model)["fc/kernel"]  # [72, 16]: 18 groups of 4 per output unit
    assert ((fc.reshape(18, 4, 16) != 0).sum(axis=1) == 2).all()
    assert {r.pattern for r in pruning.summary(model).pruned} == {"2:4"}


def assert_whole_groups(model, masks, structure):
    """Every group of every pruned weight is all kept or all zero, read from the weights."""
    for key, w in weights_of(model).items():
        if key in masks:
            axis = w.ndim - 1 if structure == "units" else (0 if w.ndim == 2 else w.ndim - 2)
            alive = np.moveaxis(w != 0, axis, 0).reshape(w.shape[axis], -1)
            assert (alive.all(axis=1) | ~alive.any(axis=1)).all(), key  # each group all or none


@pytest.mark.parametrize("structure", ["units", "inputs"])
def test_whole_units_filters_and_inputs_stay_zero_through_training(structure):
    model = users_conv_model()
    masks = get_masks(prune_low_magnitude(model, "layer-sparsity", 0.5, pattern=structure))
    compile_(model, keras.optimizers.Adam(0.01))
    model.fit(*users_data(), batch_size=16, verbose=0)
    assert_pruned_weights_are_zero(model, masks)
    assert_whole_groups(model, masks, structure)
    assert {r.pattern for r in pruning.summary(model).pruned} == {structure}


@pytest.mark.parametrize("structure, norm", [("units", "l1"), ("inputs", "l2")])
def test_gradual_pruning_removes_whole_groups_inside_the_step(structure, norm):
    model = users_conv_model()
    compile_(model, keras.optimizers.Adam(0.01))
    schedule = pruning.PolynomialDecay(final_sparsity=0.5, end_step=8, frequency=2)
    model.fit(*users_data(), batch_size=16, epochs=2, verbose=0,
              callbacks=[pruning.GradualPruning(schedule, "layer-sparsity", pattern=structure,
                                                norm=norm)])
    masks = pruning.get_masks(model)
    assert_pruned_weights_are_zero(model, masks)
    assert_whole_groups(model, masks, structure)
    for key, mask in masks.items():  # half of each weight's groups (at least one)
        axis = mask.ndim - 1 if structure == "units" else (0 if mask.ndim == 2 else mask.ndim - 2)
        groups = mask.shape[axis]
        assert np.moveaxis(mask, axis, 0).reshape(groups, -1).all(axis=1).sum() == \
            max(1, np.round(groups / 2)), key


def test_l2_scores_groups_by_their_root_mean_square():
    # unit 0: [0.5, 0.5] (mean |w| 0.5, rms 0.5); unit 1: [0.9, 0] (mean 0.45, rms 0.64)
    kept = []
    for norm in ("l1", "l2"):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
        model.layers[0].kernel.assign(np.array([[0.5, 0.9], [0.5, 0.0]], np.float32))
        masks = get_masks(prune_low_magnitude(model, "layer-sparsity", 0.5, pattern="units",
                                              norm=norm))
        kept.append(next(iter(masks.values())).any(axis=0).tolist())
    assert kept == [[True, False], [False, True]]


def test_a_refused_call_leaves_the_model_exactly_as_it_was():
    """The second layer's MaxNorm constraint is found before the first layer is touched."""
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="a"),
                              keras.layers.Dense(3, kernel_constraint=keras.constraints.MaxNorm(),
                                                 name="b")])
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"b/kernel \(MaxNorm\).*already have a constraint"):
        prune_low_magnitude(model, "layer-sparsity", 0.5)
    for now, then in zip(model.get_weights(), before):
        np.testing.assert_array_equal(now, then)
    assert get_masks(model) == {} and model.layers[0].kernel.constraint is None
    assert get_masks(prune_low_magnitude(model, "layer-sparsity", 0.5, layers=["a"]))  # the rest


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_nan_or_infinite_weight_is_refused_not_pruned_by_chance(bad):
    model = users_conv_model()
    kernel = values(model.get_layer("fc").kernel)
    kernel[0, 0] = bad
    model.get_layer("fc").kernel.assign(kernel)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"\['fc/kernel'\] hold NaN or infinite weights"):
        prune_low_magnitude(model, "threshold", 0.01)
    assert get_masks(model) == {}
    for now, then in zip(model.get_weights(), before):
        np.testing.assert_array_equal(now, then)


@pytest.mark.parametrize("model, kwargs, match", [
    ("no prunable", {}, "model 'pool' has no prunable weight"),
    ("conv", dict(layers=["conv9"]), r"layers: \['conv9'\] not among the prunable"),
    ("conv", dict(layers="fc"), r"layers must be a list of names \(\['fc'\]\)"),
    ("conv", dict(layers=re.compile("lstm")), "'lstm' matches none"),
    ("conv", dict(layers=3), "layers must be a list of names, a compiled regex or a predicate"),
    ("conv", dict(criterion="layer-sparsity", value={"fc": 0.5}, layers=re.compile("fc")),
     "its keys choose the layers"),
    ("conv", dict(criterion="layer-sparsity", value=1.5),
     r"value \(the sparsity of criterion 'layer-sparsity'\) must be in \[0, 1\), got 1.5"),
    ("conv", dict(criterion="threshold", value=-1), "value .* must be a finite number >= 0"),
    ("conv", dict(criterion="layer-sparsity", value=True), "must be in"),
    ("conv", dict(criterion="magnitude"), "criterion must be one of"),
    ("conv", dict(criterion="global-sparsity", value={"fc": 0.5}), "value: a per-layer dict"),
    ("conv", dict(criterion="threshold", value=100.0), "removes every weight of conv1/kernel"),
    ("conv", dict(pattern="3:2"), "1 <= N <= M"),
    ("conv", dict(pattern="1x4", block="1x4"), "not both"),
])
def test_bad_input_is_one_value_error_naming_the_argument(model, kwargs, match):
    model = users_conv_model() if model == "conv" else keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.MaxPooling2D()], name="pool")
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=match):
        prune_low_magnitude(model, **kwargs)
    assert get_masks(model) == {}  # nothing half-done
    for now, then in zip(model.get_weights(), before):
        np.testing.assert_array_equal(now, then)


def test_an_unbuilt_model_is_refused():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built yet"):
        prune_low_magnitude(model)


def test_layers_that_cannot_be_pruned_are_named_not_skipped():
    class Partly(keras.Model):
        def __init__(self):
            super().__init__()
            self.used, self.unused = keras.layers.Dense(4, name="used"), keras.layers.Dense(4)

        def call(self, x):
            return self.used(x)

    model = Partly()
    model(np.zeros((1, 3), np.float32))
    with pytest.warns(UserWarning, match=r"not pruned: dense\w*/kernel \(its layer is not built"):
        assert list(get_masks(prune_low_magnitude(model, "layer-sparsity", 0.5))) == ["used/kernel"]
    lora = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="lora")])
    lora.layers[0].enable_lora(2)
    with pytest.warns(UserWarning, match=r"lora/kernel \(not a plain variable"):
        with pytest.raises(ValueError, match="no prunable weight"):
            prune_low_magnitude(lora, "layer-sparsity", 0.5)


def test_a_numpy_scalar_value_is_accepted():
    masks = get_masks(prune_low_magnitude(users_conv_model(), "layer-sparsity", np.float32(0.5)))
    assert all(m.sum() == round(0.5 * m.size) for m in masks.values())


@pytest.mark.parametrize("quantized", [False, True])
def test_strip_pruning_leaves_a_plain_model_with_the_zeros(tmp_path, quantized):
    """Quantized: `model.quantize` replaces the kernels by ones without the masks, which stay in
    the layers' arguments."""
    model = users_conv_model()
    prune_low_magnitude(model, "global-sparsity", 0.7)
    if quantized:
        model.quantize("int8")
    x = users_data(8)[0]
    expected = model.predict(x, verbose=0)
    strip_pruning(model)
    assert get_masks(model) == {} and "PruningMask" not in str(model.get_config())
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
    model.save(tmp_path / "plain.keras")
    script = ("import sys, keras, numpy as np; "
              "m = keras.models.load_model('plain.keras'); "
              "assert 'pruning' not in sys.modules; "
              "np.save('y.npy', m.predict(np.load('x.npy'), verbose=0))")
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6, atol=1e-6)


def test_the_mask_round_trips_its_config():
    mask = np.random.default_rng(0).random((7, 5)) > 0.5
    again = PruningMask.from_config(PruningMask(mask, pattern="2:4").get_config())
    np.testing.assert_array_equal(again.numpy(), mask)
    assert again.pattern == "2:4"


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a check of the JAX backend")
def test_on_jax_the_package_imports_no_tensorflow():
    script = "import sys, pruning; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "KERAS_BACKEND": "jax"})
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-2000:]
