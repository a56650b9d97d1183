"""The dense 784-512-512-10 classifier of the original repo, as a plain Keras 3 model."""
import keras
import numpy as np
import tensorflow as tf

import configs
from pruning import get_masks
from utils.checkpoints import CheckpointError, load_checkpoint


@keras.saving.register_keras_serializable(package="pruning")
class ByteDropout(keras.layers.Layer):
    """Inverted dropout drawing one random byte per unit instead of one random float.

    Why not keras.layers.Dropout: on this 2-core CPU TensorFlow's random generator is the
    bottleneck of dropout (measured ~120 us per 100x512 activations, a quarter of the training
    step's non-matmul time); a byte per unit needs a quarter of the random bits. The drop rate is
    rounded to a multiple of 1/256 (0.5 is exact).
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate, self.seed = rate, seed
        self.threshold = round(rate * 256)  # drop a unit when its random byte is below this
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.threshold == 0:
            return inputs
        words = tf.random.stateless_uniform(
            [tf.size(inputs) // 4], seed=self.seed_generator.next(), minval=None, maxval=None,
            dtype=tf.int32)  # full-range int32: four random bytes each
        keep = tf.reshape(tf.bitcast(words, tf.uint8), tf.shape(inputs)) >= self.threshold
        return tf.where(keep, inputs / (1 - self.threshold / 256), tf.zeros_like(inputs))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def build_dense_network(config):
    """Fully connected ReLU network `fc1 .. fcN` with dropout after every hidden layer and L2
    weight decay on the kernels (a regulariser: decay x sum(w^2) joins the loss)."""
    def dense(units, name, activation=None):
        return keras.layers.Dense(
            units, activation=activation, name=name,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=config.init_stddev),
            bias_initializer=keras.initializers.Constant(config.init_bias),
            kernel_regularizer=keras.regularizers.L2(config.weight_decay)
            if config.weight_decay else None)

    layers = [keras.Input((config.input_size,), name="pixels")]
    for i, units in enumerate(config.hidden_sizes, start=1):
        layers.append(dense(units, f"fc{i}", "relu"))
        if config.dropout:
            layers.append(ByteDropout(config.dropout, seed=config.seed + i, name=f"dropout{i}"))
    layers.append(dense(config.num_classes, f"fc{len(config.hidden_sizes) + 1}"))
    return keras.Sequential(layers, name="network_dense")


def dense_layers(model):
    """The model's Dense layers, input to output: the ones whose kernels are pruned."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def architecture(model):
    """'784-512-512-10': the widths of the model's Dense layers, input first."""
    kernels = [layer.kernel.shape for layer in dense_layers(model)]
    return "-".join(str(n) for n in [kernels[0][0], *(k[1] for k in kernels)]) if kernels else "?"


def load_for_fine_tuning(dense_dir, config):
    """The stage-1 checkpoint's weights and SGD momentum, in a network built from `config`
    (the pruning stage's: no dropout, its own weight decay); (model, optimizer).

    A checkpoint of another architecture is refused with one line naming both.
    """
    trained, _ = load_checkpoint(dense_dir, made_by="train_network_dense.py")
    model = build_dense_network(config)
    if [w.shape for w in trained.get_weights()] != [w.shape for w in model.get_weights()]:
        raise CheckpointError(f"{dense_dir}/ holds a {architecture(trained)} network; this stage "
                              f"builds {architecture(model)} "
                              f"(input_size, hidden_sizes, num_classes in configs.py): retrain "
                              f"with train_network_dense.py or change configs.py")
    model.set_weights(trained.get_weights())
    optimizer = keras.optimizers.SGD(configs.learning_rate(config, 0), momentum=config.momentum)
    optimizer.build(model.trainable_variables)
    for mine, theirs in zip(optimizer.momentums, trained.optimizer.momentums):
        mine.assign(theirs)
    return model, optimizer


def load_pruned(pruned_dir):
    """The stage-2 checkpoint: (model, {layer name: bool mask}), its masks checked.

    Refused with one line: a checkpoint of another stage (a dense one was never pruned), a model
    whose Dense layers are not all pruned, or a kernel with non-zeros where its mask prunes.
    """
    model, _ = load_checkpoint(pruned_dir, made_by="prune_network.py")
    masks = get_masks(model)
    if sorted(masks) != sorted(l.name for l in dense_layers(model)):
        raise CheckpointError(f"{pruned_dir}/model.keras has pruning masks on {sorted(masks)}, "
                              f"not on every Dense layer: rerun prune_network.py")
    for l in dense_layers(model):
        if np.any(l.kernel.numpy()[~masks[l.name]]):
            raise CheckpointError(f"{pruned_dir}/model.keras has non-zero weights where its "
                                  f"masks prune them ({l.name}): rerun prune_network.py")
    return model, masks


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
