"""The original repo's NumPy side of deployment: a pruned matrix to sparse (COO) form and back,
and the dense model's byte count.

Plain arrays, checked by hand on tiny examples. The pruning criteria themselves live in the
reusable package (`pruning/criteria.py`); the sparse storage formats and their sizes are
`compression/formats.py`.
"""
import numpy as np

BYTES_FLOAT32 = 4


def index_dtype(shape):
    """int16, as in the original repo, for a matrix whose dimensions all fit (< 32,768); int32
    for a larger one (e.g. the first layer of an MLP on 182x182 images)."""
    return np.int16 if max(int(n) for n in shape) <= np.iinfo(np.int16).max else np.int32


def to_coo(weights):
    """Sparse form of a 2-D matrix: float32 values, (row, col) indices of `index_dtype`, shape."""
    weights = np.asarray(weights)
    if weights.ndim != 2:
        raise ValueError(f"to_coo needs a 2-D matrix, got shape {weights.shape}")
    rows, cols = np.nonzero(weights)
    return {
        "values": weights[rows, cols].astype(np.float32),
        "indices": np.stack([rows, cols], axis=1).astype(index_dtype(weights.shape)),
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
