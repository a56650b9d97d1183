"""The deployed network: every weight matrix kept sparse, multiplied without densifying it.

A `tf.Module` rather than a Keras model so that `tf.saved_model.save` exports exactly this graph,
with one serving signature (float32 [None, 784] -> logits) that runs without this repository.

Activations are kept transposed, [features, batch], so each layer is one `sparse W^T @ h` product
with no transposes in between. Three kernels compute that product (timings in
`benchmarks/bench_inference.py` and the README):
  - "coo":    `tf.sparse.sparse_dense_matmul`; lowest call overhead, fastest at tiny batches;
  - "csr":    TensorFlow's CSR ops (`SparseMatrixMatMul`); several times faster than COO from
              batch ~32 up, and faster than the dense product at batch >= 100;
  - "gather": gather the input rows each weight reads, scale, `segment_sum` per output row;
              plain TF ops that run anywhere, but it materialises nnz x batch values;
and "auto" (the default) picks COO up to COO_MAX_BATCH rows and CSR above.
"""
import numpy as np
import tensorflow as tf

from networks.network_dense import dense_layers
from utils.pruning_utils import to_coo

COO_MAX_BATCH = 16  # COO/CSR crossover on the 2-core CPU: benchmarks/results/crossover-cpu.json
KERNELS = ("auto", "coo", "csr", "gather")


def _coo(w, h):
    return tf.sparse.sparse_dense_matmul(tf.SparseTensor(w["indices"], w["values"], w["shape"]), h)


def _csr(w, h):
    return tf.raw_ops.SparseMatrixMatMul(a=w["csr"], b=h)


def _gather(w, h):
    products = w["values"][:, None] * tf.gather(h, w["indices"][:, 1])
    return tf.math.unsorted_segment_sum(products, w["indices"][:, 0], w["shape"][0])


MATMUL = {"coo": _coo, "csr": _csr, "gather": _gather}


def sparse_layers(model):
    """Every Dense layer of a (pruned) Keras model as a `to_coo` dict plus its name and bias."""
    return [dict(name=layer.name, bias=layer.bias.numpy(), **to_coo(layer.kernel.numpy()))
            for layer in dense_layers(model)]


class SparseNetwork(tf.Module):
    """ReLU network whose layers are `to_coo` dicts (values, int16 indices, shape) plus a bias."""

    def __init__(self, layers, kernel="auto", name="network_sparse"):
        super().__init__(name=name)
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.kernel = kernel
        self.layers = []
        for layer in layers:  # W^T in row-major order: what both sparse kernels expect
            rows, cols = layer["indices"][:, 1].astype(np.int64), layer["indices"][:, 0]
            order = np.lexsort((cols, rows))
            self.layers.append(dict(
                values=layer["values"][order], shape=layer["shape"][::-1].astype(np.int64),
                indices=np.stack([rows[order], cols[order]], 1).astype(np.int16),
                bias=layer["bias"].reshape(-1, 1).astype(np.float32)))
        self.serve = tf.function(self._logits, input_signature=[
            tf.TensorSpec([None, int(layers[0]["shape"][0])], tf.float32, name="pixels")])

    def __call__(self, pixels):
        return self.serve(pixels)

    def _logits(self, pixels):
        if self.kernel != "auto":
            return self._forward(pixels, self.kernel)
        return tf.cond(tf.shape(pixels)[0] <= COO_MAX_BATCH,
                       lambda: self._forward(pixels, "coo"), lambda: self._forward(pixels, "csr"))

    def _weights(self, kernel):
        """The layers as graph constants (plus the CSR matrices for the "csr" kernel).

        Why constants and not variables: with constant inputs TensorFlow's graph optimiser
        precomputes the int16 -> int64 casts and the CSR conversion once instead of on every call
        (measured 0.45 vs 0.53 ms a call at batch 100). They are created inside each branch of
        "auto": constants from outside a tf.cond reach the branch as inputs, which are not folded
        (measured 0.1 ms a call more), and a CSR matrix passed in from outside does not survive
        a SavedModel reload. So "auto" stores the arrays twice in its SavedModel.
        """
        weights = [dict(values=tf.constant(l["values"]), shape=tf.constant(l["shape"]),
                        indices=tf.cast(tf.constant(l["indices"]), tf.int64),
                        bias=tf.constant(l["bias"])) for l in self.layers]
        if kernel == "csr":
            for w in weights:
                w["csr"] = tf.raw_ops.SparseTensorToCSRSparseMatrix(
                    indices=w["indices"], values=w["values"], dense_shape=w["shape"])
        return weights

    def _forward(self, pixels, kernel):
        h = tf.transpose(pixels)
        weights = self._weights(kernel)
        for i, w in enumerate(weights):
            h = MATMUL[kernel](w, h) + w["bias"]
            if i < len(weights) - 1:
                h = tf.nn.relu(h)
        return tf.transpose(h)

    def save(self, path):
        """Export as a SavedModel whose `serving_default` maps pixels to logits."""
        tf.saved_model.save(self, str(path), signatures={"serving_default": self.serve})
