"""Per-layer sparsities from sensitivity: the allocation's known answers, and the measurement on
a model (its weights put back)."""
import keras
import numpy as np
import pytest

import pruning


def test_the_layer_that_loses_less_is_pruned_further_at_one_tolerance():
    # equal sizes; A keeps its score to 50% then loses 0.1 by 90%, B loses 0.2 by 50%
    curves = {"a/kernel": [(0, 1.0), (0.5, 1.0), (0.9, 0.9)],
              "b/kernel": [(0, 1.0), (0.5, 0.8), (0.9, 0.7)]}
    got = pruning.allocate_sparsity(curves, {"a/kernel": 100, "b/kernel": 100}, 0.5)
    # tolerance t: A at 0.5 + 4t, B at 2.5t; together 1.0 at t = 1/13
    assert got["a/kernel"] == pytest.approx(0.5 + 4 / 13) and got["b/kernel"] == pytest.approx(
        2.5 / 13)


def test_sizes_weigh_the_total_and_flat_curves_share_the_target():
    flat = [(0, 0.9), (0.5, 0.9), (0.9, 0.9)]
    got = pruning.allocate_sparsity({"a": flat, "b": flat}, {"a": 300, "b": 100}, 0.45)
    assert got == pytest.approx({"a": 0.45, "b": 0.45})  # the same curve: the same share
    noisy = {"a": [(0, 0.9), (0.5, 0.95), (0.9, 0.8)], "b": [(0, 0.9), (0.5, 0.9), (0.9, 0.9)]}
    got = pruning.allocate_sparsity(noisy, {"a": 300, "b": 100}, 0.6)
    assert (300 * got["a"] + 100 * got["b"]) / 400 == pytest.approx(0.6)
    assert got["b"] == pytest.approx(0.9) and got["a"] == pytest.approx(0.5)  # a rise: no gain


def test_a_target_beyond_the_measured_levels_is_refused():
    with pytest.raises(ValueError, match="target sparsity 0.95 is outside what the measured "
                                         "levels reach \\(0 to 0.9000\\)"):
        pruning.allocate_sparsity({"a": [(0, 1.0), (0.9, 0.5)]}, {"a": 10}, 0.95)


def test_sensitivity_prunes_one_layer_at_a_time_and_puts_every_weight_back():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="a"),
                              keras.layers.Dense(2, name="b")])
    before = [w.copy() for w in model.get_weights()]
    seen = []

    def score(m):  # records which kernels are sparse when scored
        seen.append(tuple(float(np.mean(l.kernel.numpy() == 0)) for l in m.layers))
        return -len(seen)

    curves = pruning.layer_sensitivity(model, score, [0.5, 0.75])
    assert list(curves) == ["a/kernel", "b/kernel"]
    assert [s for s, _ in curves["b/kernel"]] == [0.0, 0.5, 0.75]
    assert seen == [(0, 0), (0.5, 0), (0.75, 0), (0, 0.5), (0, 0.75)]
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
