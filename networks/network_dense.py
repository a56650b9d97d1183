"""The dense 784-512-512-10 classifier of the original repo, as a plain Keras 3 model."""
import keras
import tensorflow as tf


def build_dense_network(config):
    """Fully connected ReLU network `fc1 .. fcN` with dropout after every hidden layer.

    Weight decay is a Keras L2 regulariser on the kernels (decay x sum of squares, biases not
    decayed), so `model.losses` carries it into whatever training loop is used.
    """
    def dense(units, name, activation=None):
        return keras.layers.Dense(
            units, activation=activation, name=name,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=config.init_stddev),
            bias_initializer=keras.initializers.Constant(config.init_bias),
            kernel_regularizer=keras.regularizers.L2(config.weight_decay))

    layers = [keras.Input((config.input_size,), name="pixels")]
    for i, units in enumerate(config.hidden_sizes, start=1):
        layers.append(dense(units, f"fc{i}", "relu"))
        if config.dropout:
            layers.append(keras.layers.Dropout(config.dropout, name=f"dropout{i}"))
    layers.append(dense(config.num_classes, f"fc{len(config.hidden_sizes) + 1}"))
    return keras.Sequential(layers, name="network_dense")


def dense_layers(model):
    """The model's Dense layers, input to output: the ones whose kernels are pruned."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def export_saved_model(model, path):
    """Export the inference graph as a SavedModel (`serving_default`: pixels -> logits).

    Not `model.export`: in Keras 3.15 it writes every variable twice (measured: 5.36 MB of
    variables for 2.68 MB of weights), which would skew the dense-vs-sparse size comparison.
    """
    module = tf.Module()
    module.weights = model.weights

    def logits(pixels):
        return model(pixels, training=False)

    module.serve = tf.function(logits, input_signature=[
        tf.TensorSpec([None, model.input_shape[-1]], tf.float32, name="pixels")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
