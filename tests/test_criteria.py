import numpy as np
import pytest

from pruning import criteria


def test_mask_keeps_weights_at_threshold():
    w = np.array([[-0.05, -0.03, -0.01], [0.0, 0.03, 0.029]])
    np.testing.assert_array_equal(criteria.threshold_mask(w, 0.03),
                                  [[True, True, False], [False, True, False]])


def test_zero_threshold_keeps_everything_including_zeros():
    w = np.array([[0.0, 1.0]])
    assert criteria.threshold_mask(w, 0.0).all()


@pytest.mark.parametrize("bad", [-0.1, np.nan, np.inf])
def test_threshold_must_be_finite_and_non_negative(bad):
    with pytest.raises(ValueError, match="threshold must be"):
        criteria.threshold_mask(np.ones((2, 2)), bad)


def test_check_masks_names_the_emptied_layer():
    with pytest.raises(ValueError, match="every weight of layer fc2"):
        criteria.check_masks([np.array([True]), np.array([False, False])], ["fc1", "fc2"])


def test_check_masks_names_the_value_that_went_too_far():
    with pytest.raises(ValueError, match="std pruning at quality 50 removes every weight of layer "
                                         "fc1: choose a smaller quality"):
        criteria.check_masks([np.array([False])], ["fc1"], "std", 50)


def test_sparsity_counts_zeros():
    assert criteria.sparsity(np.array([True, False, False, False])) == 0.75


def test_std_criterion_uses_each_layers_own_std():
    a = np.array([-2.0, -1.0, 1.0, 2.0])          # std 1.58
    b = 10 * a                                    # std 15.8
    masks = criteria.std_masks([a, b], 1.0)
    np.testing.assert_array_equal(masks[0], [True, False, False, True])
    np.testing.assert_array_equal(masks[1], [True, False, False, True])


def test_layer_sparsity_prunes_each_layer_to_the_target():
    w1 = np.arange(1, 11, dtype=np.float32) * np.array([1, -1] * 5)
    w2 = np.array([[0.5, -0.1], [0.3, 0.2]])
    m1, m2 = criteria.layer_sparsity_masks([w1, w2], 0.5)
    np.testing.assert_array_equal(np.flatnonzero(m1), [5, 6, 7, 8, 9])  # the five largest |w|
    np.testing.assert_array_equal(m2, [[True, False], [True, False]])


def test_layer_sparsity_always_keeps_one_weight():
    (mask,) = criteria.layer_sparsity_masks([np.array([0.1, 0.2, 0.3])], 0.99)
    np.testing.assert_array_equal(mask, [False, False, True])


def test_global_sparsity_is_one_cut_across_layers():
    small, large = np.array([0.1, 0.2, 0.3, 0.4]), np.array([1.0, 2.0])
    m_small, m_large = criteria.global_sparsity_masks([small, large], 0.5)
    np.testing.assert_array_equal(m_small, [False, False, False, True])
    assert m_large.all()
    m_small, m_large = criteria.global_sparsity_masks([small, large], 1 / 3)
    np.testing.assert_array_equal(m_small, [False, False, True, True])
    assert m_large.all()


@pytest.mark.parametrize("criterion, value", [("threshold", 0.5), ("std", 0.5),
                                              ("layer-sparsity", 0.6), ("global-sparsity", 0.6)])
def test_masks_nest_inside_the_previous_ones(criterion, value):
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(20, 10)), rng.normal(size=(10, 3))]
    previous = [rng.random(w.shape) > 0.3 for w in weights]
    masks = criteria.criterion_masks(weights, criterion, value, previous)
    for m, p in zip(masks, previous):
        assert not (m & ~p).any()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_must_be_a_fraction(bad):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        criteria.layer_sparsity_masks([np.ones(4)], bad)


def test_unknown_criterion_is_rejected():
    with pytest.raises(ValueError, match="criterion must be one of"):
        criteria.criterion_masks([np.ones(4)], "random", 0.5)


def test_sparsity_of_several_masks_counts_them_together():
    masks = [np.array([True, False]), np.array([False, False, False, True])]
    assert criteria.sparsity(masks) == pytest.approx(4 / 6)
