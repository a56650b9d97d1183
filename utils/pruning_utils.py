"""The original repo's NumPy side of deployment: a pruned matrix to sparse (COO) form and back,
and the dense model's byte count.

Plain arrays, checked by hand on tiny examples. The pruning criteria themselves live in the
reusable package (`pruning/criteria.py`); the sparse storage formats and their sizes are
`utils/sparse_formats.py`.
"""
import numpy as np

BYTES_FLOAT32 = 4


def to_coo(weights):
    """Sparse form of a 2-D matrix: float32 values, int16 (row, col) indices, dense shape.

    Indices are int16 as in the original repo: every dimension here is < 32,768.
    """
    weights = np.asarray(weights)
    if weights.ndim != 2 or max(weights.shape) > np.iinfo(np.int16).max:
        raise ValueError(f"to_coo needs a 2-D matrix with both dims <= 32767, got {weights.shape}")
    rows, cols = np.nonzero(weights)
    return {
        "values": weights[rows, cols].astype(np.float32),
        "indices": np.stack([rows, cols], axis=1).astype(np.int16),
        "shape": np.array(weights.shape, np.int32),
    }


def from_coo(coo):
    """Dense matrix back from `to_coo`'s dict (for tests and checks; deployment never densifies)."""
    dense = np.zeros(coo["shape"], np.float32)
    dense[coo["indices"][:, 0], coo["indices"][:, 1]] = coo["values"]
    return dense


def dense_bytes(layers):
    """Bytes of the dense float32 model: every weight-matrix and bias entry.

    `layers` are `to_coo` dicts with a "bias" entry added (only shapes and sizes are read).
    """
    return BYTES_FLOAT32 * sum(int(np.prod(l["shape"])) + l["bias"].size for l in layers)
