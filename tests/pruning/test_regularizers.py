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
