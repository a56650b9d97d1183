"""pruning.GroupLasso / add_group_lasso: the penalty's known answers, and that training with it
drives whole groups to zero where the same training without it does not."""
import keras
import numpy as np
import pytest

import pruning
from tests.pruning._models import compile_, values


def test_the_penalty_is_strength_times_root_size_times_the_group_norms():
    w = keras.ops.convert_to_tensor(np.array([[3., 0.], [4., 1.]], np.float32))
    # units: columns [3, 4] and [0, 1]; inputs: rows [3, 0] and [4, 1]
    assert float(pruning.GroupLasso(0.5, "units")(w)) == pytest.approx(0.5 * 2 ** .5 * (5 + 1))
    assert float(pruning.GroupLasso(0.5, "inputs")(w)) == pytest.approx(
        0.5 * 2 ** .5 * (3 + 17 ** .5))
    conv = keras.ops.ones((3, 3, 2, 4))  # a filter: 18 ones, norm sqrt(18)
    assert float(pruning.GroupLasso(1.0, "units")(conv)) == pytest.approx(18 ** .5 * 4 * 18 ** .5)
    with_decay = pruning.GroupLasso(0.5, "units", keras.regularizers.L2(0.1))
    assert float(with_decay(w)) == pytest.approx(0.5 * 2 ** .5 * 6 + 0.1 * 26)


def unit_norms(model, name):
    return np.linalg.norm(values(model.get_layer(name).kernel), axis=0)


def fitted(strength):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, "relu", name="hidden"),
                              keras.layers.Dense(1, name="out")])
    if strength:
        keys = pruning.add_group_lasso(model, strength, "units", layers=["hidden"])
        assert keys == ["hidden/kernel"]
    compile_(model, keras.optimizers.Adam(0.01), loss="mse")
    x = np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)
    model.fit(x, x[:, :1] * 2, epochs=30, batch_size=32, verbose=0)
    return model


def test_training_with_it_zeroes_whole_units_and_save_keeps_it(tmp_path):
    plain, lasso = unit_norms(fitted(0), "hidden"), fitted(2e-2)
    norms = unit_norms(lasso, "hidden")  # measured: 10 of 16 below 1e-2 (Adam keeps them
    assert (norms < 1e-2).sum() >= 6 and plain.min() > 0.1  # near 0, not at it)
    lasso.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.get_layer("hidden").kernel_regularizer, pruning.GroupLasso)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="strength must be a number >= 0"):
        pruning.GroupLasso(-1)
    with pytest.raises(ValueError, match="structure must be one of"):
        pruning.GroupLasso(1.0, "rows")


def test_every_layer_kinds_penalty_is_saved_or_named(tmp_path):
    """Each weight's penalty travels in its layer's config under the argument of its kind
    (depthwise_, pointwise_, embeddings_, recurrent_regularizer, not only kernel_); attention's
    projections, rebuilt from the attention layer's own arguments, are named at once."""
    images, tokens = keras.Input((6, 6, 3)), keras.Input((4,), dtype="int32")
    a = keras.layers.DepthwiseConv2D(2, name="dw")(keras.layers.Conv2D(4, 3, name="conv")(images))
    a = keras.layers.GlobalAveragePooling2D()(keras.layers.SeparableConv2D(3, 2, name="sep")(a))
    e = keras.layers.Embedding(10, 4, name="emb")(tokens)
    e = keras.layers.LSTM(3, name="lstm")(keras.layers.MultiHeadAttention(1, 2, name="mha")(e, e))
    model = keras.Model([images, tokens], keras.layers.Dense(2, name="out")(
        keras.layers.Concatenate()([a, e])))
    with pytest.warns(UserWarning, match=r"rebuild \['mha/query/kernel', 'mha/key/kernel'"):
        keys = pruning.add_group_lasso(model, 0.1, "units")
    model.save(tmp_path / "m.keras")
    for again in (keras.models.load_model(tmp_path / "m.keras"), keras.models.clone_model(model)):
        kept = [w.key for w in pruning.prunable_weights(again)
                if isinstance(w.variable.regularizer, pruning.GroupLasso)]
        assert sorted(kept) == sorted(k for k in keys if not k.startswith("mha/"))
        assert len(kept) == 8  # conv, dw, both of sep, emb, both of the LSTM cell, out
