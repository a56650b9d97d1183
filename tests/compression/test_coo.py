import numpy as np
import pytest

from compression import coo as pu


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
