"""The deployed network: every weight matrix kept sparse, multiplied without densifying it.

A `tf.Module` rather than a Keras model so that `tf.saved_model.save` exports exactly this graph,
with one serving signature (float32 [None, H*W] -> logits) that runs without this repository.

Activations of the fully connected layers are kept transposed, [features, batch], so each layer is
one `sparse W^T @ h` product with no transposes in between. A conv layer is the same product on
its input's patches (im2col: `tf.image.extract_patches`, one column per output pixel), its kernel
[kh, kw, cin, cout] viewed as the 2-D matrix [kh*kw*cin, cout] that the storage formats store.
Three kernels compute that product (timings in
`benchmarks/bench_inference.py` and the README):
  - "coo":    `tf.sparse.sparse_dense_matmul`; lowest call overhead, fastest at tiny batches;
  - "csr":    TensorFlow's CSR ops (`SparseMatrixMatMul`); several times faster than COO from
              batch ~32 up, and faster than the dense product at batch >= 100;
  - "gather": gather the input rows each weight reads, scale, `segment_sum` per output row;
              plain TF ops that run anywhere, but it materialises nnz x batch values;
and "auto" (the default) picks COO up to COO_MAX_BATCH rows and CSR above, CSR for every conv
layer (its product has one column per output pixel: H'·W' per image, past the crossover), and a
dense product for a fully connected layer that is more than DENSE_ABOVE non-zero (the MLP's
last layer, 83%: measured as fast, and its SavedModel 5% smaller).
"""
import keras
import numpy as np
import tensorflow as tf

from compression.coo import index_dtype, to_coo
from networks.builders import full_width_kernel, input_rows
from networks.layers import ByteDropout
from pruning import SelectFeatures
from training.evaluate import evaluate, predict

COO_MAX_BATCH = 16  # COO/CSR crossover on the 2-core CPU: benchmarks/results/crossover-cpu.json
DENSE_ABOVE = 0.5  # density above which "auto" multiplies a fully connected layer densely
KERNELS = ("auto", "coo", "csr", "gather")


def _coo(w, h):
    return tf.sparse.sparse_dense_matmul(tf.SparseTensor(w["indices"], w["values"], w["shape"]), h)


def _csr(w, h):
    return tf.raw_ops.SparseMatrixMatMul(a=w["csr"], b=h)


def _gather(w, h):
    products = w["values"][:, None] * tf.gather(h, w["indices"][:, 1])
    return tf.math.unsorted_segment_sum(products, w["indices"][:, 0], w["shape"][0])


def _dense(w, h):
    return tf.matmul(w["dense"], h)


MATMUL = {"coo": _coo, "csr": _csr, "gather": _gather, "dense": _dense}


def sparse_layers(model):
    """Every weight layer of a pruned Keras model, input to output, as a `to_coo` dict of its
    kernel as a 2-D matrix plus its name, bias and "spec": how the deployed network runs it
    ({"kind": "dense" | "conv", "activation": "relu" | None, and for a conv "kernel_shape",
    "input_shape" and "pool", its max-pooling size}).

    The layers `networks.builders.build_network` builds are understood, and the gathers a shrunk
    model has (`pruning.SelectFeatures` before a Dense layer: its kernel is stored with zero rows
    for the features it does not read, which the sparse formats do not store); any other layer,
    or a conv with padding, strides or dilation, is a ValueError naming it.
    """
    layers = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            activation = keras.activations.serialize(layer.activation)
            if activation not in ("relu", "linear"):
                raise ValueError(f"cannot deploy {layer.name}: activation {activation!r}")
            if isinstance(layer, keras.layers.Conv2D) and input_rows(layer) is not None:
                raise ValueError(f"cannot deploy {layer.name}: a conv after a gather")
            kernel = full_width_kernel(layer)
            spec = dict(kind="dense", activation="relu" if activation == "relu" else None)
            if isinstance(layer, keras.layers.Conv2D):
                if (layer.padding, layer.strides, layer.dilation_rate) != ("valid", (1, 1), (1, 1)):
                    raise ValueError(f"cannot deploy {layer.name}: only valid, stride-1, "
                                     f"undilated convolutions are supported")
                spec.update(kind="conv", kernel_shape=list(kernel.shape), pool=1,
                            input_shape=[int(n) for n in layer.input.shape[1:]])
                kernel = kernel.reshape(-1, kernel.shape[-1])
            layers.append(dict(name=layer.name, bias=layer.bias.numpy(), spec=spec,
                               **to_coo(kernel)))
        elif isinstance(layer, keras.layers.MaxPooling2D) and layers and \
                layers[-1]["spec"]["kind"] == "conv" and layer.pool_size == layer.strides and \
                layer.padding == "valid":
            layers[-1]["spec"]["pool"] = layer.pool_size[0]
        elif not isinstance(layer, (keras.layers.Reshape, keras.layers.Flatten, SelectFeatures,
                                    keras.layers.Dropout, ByteDropout, keras.layers.InputLayer)):
            raise ValueError(f"cannot deploy {layer.name} ({type(layer).__name__}) sparsely")
    return layers


def check_sparse(layers, x_test, y_test, dense_logits, batch_size, tolerance):
    """(test accuracy, loss, max |logit difference|) of the exact `SparseNetwork(layers)`;
    ValueError, before anything is saved, if its logits are not `dense_logits` (the Keras
    model's) within `tolerance` (the two sum in different orders)."""
    network = SparseNetwork(layers)
    accuracy, loss = evaluate(network, x_test, y_test, batch_size)
    gap = float(np.max(np.abs(predict(network, x_test) - dense_logits)))
    if gap > tolerance:
        raise ValueError(f"the sparse network disagrees with the dense one (max |logit "
                         f"difference| {gap:.1e} > {tolerance:.0e}): not saved")
    return accuracy, loss, gap


class SparseNetwork(tf.Module):
    """The network of `sparse_layers`: `to_coo` dicts (values, int16 or int32 indices, shape)
    with a bias and a spec (a layer without a spec is a dense ReLU layer, the last one without
    ReLU)."""

    def __init__(self, layers, kernel="auto", name="network_sparse"):
        super().__init__(name=name)
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.kernel = kernel
        self.layers = []
        for layer in layers:  # W^T in row-major order: what both sparse kernels expect
            rows, cols = layer["indices"][:, 1].astype(np.int64), layer["indices"][:, 0]
            order = np.lexsort((cols, rows))
            spec = layer.get("spec") or dict(
                kind="dense", activation=None if layer is layers[-1] else "relu")
            self.layers.append(dict(
                values=layer["values"][order], shape=layer["shape"][::-1].astype(np.int64),
                indices=np.stack([rows[order], cols[order]], 1).astype(
                    index_dtype(layer["shape"])),
                bias=layer["bias"].reshape(-1, 1).astype(np.float32), spec=spec))
        first = self.layers[0]["spec"]
        pixels = np.prod(first["input_shape"]) if first["kind"] == "conv" else layers[0]["shape"][0]
        self.serve = tf.function(self._logits, input_signature=[
            tf.TensorSpec([None, int(pixels)], tf.float32, name="pixels")])

    def __call__(self, pixels):
        return self.serve(pixels)

    def _logits(self, pixels):
        if self.kernel != "auto":
            return self._forward(pixels, self.kernel)
        return tf.cond(tf.shape(pixels)[0] <= COO_MAX_BATCH,
                       lambda: self._forward(pixels, "coo"), lambda: self._forward(pixels, "csr"))

    def _kernels(self, kernel):
        """The kernel of each layer: `kernel`, except under "auto" CSR for the conv layers and
        dense for the nearly dense fully connected ones."""
        if self.kernel != "auto":
            return [kernel] * len(self.layers)
        return ["csr" if l["spec"]["kind"] == "conv" else
                "dense" if len(l["values"]) > DENSE_ABOVE * np.prod(l["shape"]) else kernel
                for l in self.layers]

    def _weights(self, kernels):
        """The layers as graph constants (plus the CSR matrices of the layers run by "csr").

        Why constants and not variables: with constant inputs TensorFlow's graph optimiser
        precomputes the int16 -> int64 casts and the CSR conversion once instead of on every call
        (measured 0.45 vs 0.53 ms a call at batch 100). They are created inside each branch of
        "auto": constants from outside a tf.cond reach the branch as inputs, which are not folded
        (measured 0.1 ms a call more), and a CSR matrix passed in from outside does not survive
        a SavedModel reload. So "auto" stores the arrays twice in its SavedModel.
        """
        weights = []
        for l, kernel in zip(self.layers, kernels):
            w = dict(bias=tf.constant(l["bias"]), spec=l["spec"])
            if kernel == "dense":  # W^T with its zeros
                dense = np.zeros(l["shape"], np.float32)
                dense[tuple(l["indices"].astype(np.int64).T)] = l["values"]
                w["dense"] = tf.constant(dense)
            else:
                w.update(values=tf.constant(l["values"]), shape=tf.constant(l["shape"]),
                         indices=tf.cast(tf.constant(l["indices"]), tf.int64))
            if kernel == "csr":
                w["csr"] = tf.raw_ops.SparseTensorToCSRSparseMatrix(
                    indices=w["indices"], values=w["values"], dense_shape=w["shape"])
            weights.append(w)
        return weights

    def _forward(self, pixels, kernel):
        h = pixels  # [batch, ...] through the convs, then [features, batch]
        kernels = self._kernels(kernel)
        for i, (w, kernel) in enumerate(zip(self._weights(kernels), kernels)):
            spec = w["spec"]
            if spec["kind"] == "conv":
                h = self._conv(w, tf.reshape(h, [-1, *spec["input_shape"]]), kernel)
            else:
                if i == 0 or self.layers[i - 1]["spec"]["kind"] == "conv":
                    h = tf.transpose(tf.reshape(h, [tf.shape(h)[0], -1]))
                h = MATMUL[kernel](w, h) + w["bias"]
            if spec["activation"] == "relu":
                h = tf.nn.relu(h)
            if spec.get("pool", 1) > 1:
                h = tf.nn.max_pool2d(h, spec["pool"], spec["pool"], "VALID")
        return tf.transpose(h)

    @staticmethod
    def _conv(w, images, kernel):
        """A valid, stride-1 conv as the sparse product W^T @ patches^T: [batch, H', W', cout]."""
        kh, kw, _, cout = w["spec"]["kernel_shape"]
        patches = tf.image.extract_patches(images, [1, kh, kw, 1], [1, 1, 1, 1], [1, 1, 1, 1],
                                           "VALID")  # [batch, H', W', kh*kw*cin]
        out = MATMUL[kernel](w, tf.transpose(tf.reshape(patches, [-1, tf.shape(patches)[-1]])))
        return tf.reshape(tf.transpose(out + w["bias"]), [*tf.unstack(tf.shape(patches)[:3]),
                                                           cout])

    def save(self, path):
        """Export as a SavedModel whose `serving_default` maps pixels to logits."""
        tf.saved_model.save(self, str(path), signatures={"serving_default": self.serve})
