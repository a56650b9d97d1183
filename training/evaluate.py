"""What the dense and the sparse network share: how a network is scored on a dataset."""
import numpy as np
import tensorflow as tf


def cross_entropy(labels, logits):
    """Per-example softmax cross-entropy from logits and integer labels."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def logits_function(model):
    """Compiled inference (dropout off) of a Keras model: pixels -> logits, any batch size."""
    return tf.function(lambda x: model(x, training=False), input_signature=[
        tf.TensorSpec([None, model.input_shape[-1]], tf.float32)])


def predict(logits_fn, x, batch_size=5000):
    """Logits of `x` as a NumPy array, computed `batch_size` rows at a time."""
    return np.concatenate([np.asarray(logits_fn(tf.constant(x[i:i + batch_size])))
                           for i in range(0, len(x), batch_size)])


def evaluate(logits_fn, x, y, batch_size=5000):
    """(accuracy, mean cross-entropy) of a logits function on (x, y)."""
    logits = predict(logits_fn, x, batch_size)
    loss = float(np.mean(cross_entropy(y, logits)))
    return float(np.mean(np.argmax(logits, axis=1) == y)), loss
