"""The deployed network: every weight matrix kept sparse, multiplied without densifying it.

A `tf.Module` rather than a Keras model so that `tf.saved_model.save` exports exactly this graph,
with one serving signature (float32 [None, 784] -> logits) that runs without this repository.
"""
import tensorflow as tf


class SparseNetwork(tf.Module):
    """ReLU network whose layers are `to_coo` dicts (values, int16 indices, shape) plus a bias.

    The forward pass keeps activations transposed, [features, batch], so each layer is one
    `sparse W^T @ h` product (TensorFlow's sparse x dense kernel) with no transposes in between.
    """

    def __init__(self, layers, name="network_sparse"):
        super().__init__(name=name)
        self.kernels_t = []
        self.biases = []
        for layer in layers:
            rows, cols = layer["indices"][:, 0], layer["indices"][:, 1]
            order = (cols.astype(int) * layer["shape"][0] + rows).argsort()  # row-major in W^T
            self.kernels_t.append(dict(
                values=tf.Variable(layer["values"][order], trainable=False),
                indices=tf.Variable(layer["indices"][order][:, ::-1], trainable=False),  # int16
                shape=tf.constant(layer["shape"][::-1].astype("int64"))))
            self.biases.append(tf.Variable(layer["bias"].reshape(-1, 1), trainable=False))
        input_size = int(layers[0]["shape"][0])
        self.serve = tf.function(self._logits, input_signature=[
            tf.TensorSpec([None, input_size], tf.float32, name="pixels")])

    def __call__(self, pixels):
        return self.serve(pixels)

    def _logits(self, pixels):
        h = tf.transpose(pixels)
        for i, (kernel, bias) in enumerate(zip(self.kernels_t, self.biases)):
            w_t = tf.SparseTensor(tf.cast(kernel["indices"], tf.int64), kernel["values"],
                                  kernel["shape"])
            h = tf.sparse.sparse_dense_matmul(w_t, h) + bias
            if i < len(self.biases) - 1:
                h = tf.nn.relu(h)
        return tf.transpose(h)

    def save(self, path):
        """Export as a SavedModel whose `serving_default` maps pixels to logits."""
        tf.saved_model.save(self, str(path), signatures={"serving_default": self.serve})
