import numpy as np
import pytest

from utils import pruning_utils as pu


def test_mask_keeps_weights_at_threshold():
    w = np.array([[-0.05, -0.03, -0.01], [0.0, 0.03, 0.029]])
    np.testing.assert_array_equal(pu.threshold_mask(w, 0.03),
                                  [[True, True, False], [False, True, False]])


def test_zero_threshold_keeps_everything_including_zeros():
    w = np.array([[0.0, 1.0]])
    assert pu.threshold_mask(w, 0.0).all()


@pytest.mark.parametrize("bad", [-0.1, np.nan, np.inf])
def test_threshold_must_be_finite_and_non_negative(bad):
    with pytest.raises(ValueError, match="threshold must be"):
        pu.threshold_mask(np.ones((2, 2)), bad)


def test_check_masks_names_the_emptied_layer():
    with pytest.raises(ValueError, match="every weight of layer fc2"):
        pu.check_masks([np.array([True]), np.array([False, False])], ["fc1", "fc2"])


def test_sparsity_counts_zeros():
    assert pu.sparsity(np.array([True, False, False, False])) == 0.75


def test_coo_round_trip_is_exact_and_uses_int16_indices():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(7, 5)).astype(np.float32) * (rng.random((7, 5)) > 0.6)
    coo = pu.to_coo(w)
    assert coo["indices"].dtype == np.int16 and coo["values"].dtype == np.float32
    assert len(coo["values"]) == np.count_nonzero(w)
    np.testing.assert_array_equal(coo["shape"], [7, 5])
    np.testing.assert_array_equal(pu.from_coo(coo), w)


def test_to_coo_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D matrix"):
        pu.to_coo(np.ones((2, 2, 2)))


def test_dense_byte_count_by_hand():
    w = np.zeros((4, 3), np.float32)
    w[0, 0], w[3, 2] = 1.0, -2.0
    layer = dict(bias=np.zeros(3, np.float32), **pu.to_coo(w))
    assert pu.dense_bytes([layer]) == 4 * (12 + 3)
