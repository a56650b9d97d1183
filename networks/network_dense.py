"""The networks as plain Keras 3 models: the original repo's 784-512-512-10 MLP and the
papers' LeNet-300-100 and LeNet-5 (configs.NETWORKS), and their checkpoints."""
import sys

import keras
import numpy as np
import tensorflow as tf

import configs
from pruning import get_masks, prunable_layers
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


def build_network(config):
    """The Keras model of `config`: pixels [batch, H*W] -> logits, weight layers named after
    their kind and place (conv1, fc1, ...), L2 weight decay on every kernel (a regulariser:
    decay x sum(w^2) joins the loss).

    Two kinds of network, by `config.conv_filters`:
      - fully connected (mlp, lenet-300-100): fc1 .. fcN, ReLU and dropout after each hidden one;
      - convolutional (lenet-5, Caffe's LeNet as the papers used it): the images reshaped to
        H x W x 1, conv1 .. convK (5x5, valid, no activation, as in Caffe's LeNet), each followed
        by 2x2 max-pooling, then the fully connected layers as above.
    """
    def weights():
        """A weight layer's initialisers and regulariser, new for each layer: a Keras 3
        initialiser draws its seed once (from the seed `keras.utils.set_random_seed` set), when
        it is made, so one shared by all layers, or one int seed given to all, would make every
        kernel draw from the same random stream. Caffe's "xavier" filler is LeCun uniform."""
        init = (keras.initializers.TruncatedNormal(stddev=config.init_stddev) if config.init_stddev
                else keras.initializers.LecunUniform())
        return dict(kernel_initializer=init,
                    bias_initializer=keras.initializers.Constant(config.init_bias),
                    kernel_regularizer=keras.regularizers.L2(config.weight_decay)
                    if config.weight_decay else None)

    check_image_size(config)
    layers = [keras.Input((config.input_size,), name="pixels")]
    if config.conv_filters:
        layers.append(keras.layers.Reshape((*config.image_shape, 1), name="image"))
        for i, filters in enumerate(config.conv_filters, start=1):
            layers += [keras.layers.Conv2D(filters, 5, name=f"conv{i}", **weights()),
                       keras.layers.MaxPooling2D(2, name=f"pool{i}")]
        layers.append(keras.layers.Flatten(name="flatten"))
    for i, units in enumerate(config.hidden_sizes, start=1):
        layers.append(keras.layers.Dense(units, "relu", name=f"fc{i}", **weights()))
        if config.dropout:
            layers.append(ByteDropout(config.dropout, seed=config.seed + i, name=f"dropout{i}"))
    layers.append(keras.layers.Dense(config.num_classes, name=f"fc{len(config.hidden_sizes) + 1}",
                                     **weights()))
    return keras.Sequential(layers, name=config.network.replace("-", "_"))


def check_image_size(config):
    """Raise ValueError unless the images survive the conv + pool stages (LeNet-5: >= 16x16)."""
    side = min(config.image_shape)
    for _ in config.conv_filters:
        side = (side - 4) // 2  # a 5x5 valid conv, then 2x2 pooling
    if side < 1:
        raise ValueError(f"{config.network} needs larger images: "
                         f"{'x'.join(map(str, config.image_shape))} shrinks to nothing in its "
                         f"{len(config.conv_filters)} conv + pool stages (lenet-5 needs at least "
                         f"16x16); use mlp or lenet-300-100")


def parameter_count(config):
    """The number of weights and biases `build_network(config)` will have, without building it
    (so that a size too large for the machine is refused before it is allocated)."""
    (h, w), channels, count = config.image_shape, 1, 0
    for filters in config.conv_filters:
        count += 25 * channels * filters + filters
        channels, h, w = filters, (h - 4) // 2, (w - 4) // 2
    inputs = h * w * channels if config.conv_filters else config.input_size
    for units in (*config.hidden_sizes, config.num_classes):
        count += inputs * units + units
        inputs = units
    return count


def weight_layers(model):
    """The model's conv and Dense layers, input to output: the ones whose kernels are pruned."""
    return prunable_layers(model)


def architecture(model):
    """'784-512-512-10' or '784-conv20-conv50-500-10': the input size, then the weight layers."""
    return "-".join([str(model.input_shape[-1]), *(
        ("" if isinstance(l, keras.layers.Dense) else "conv") + str(l.kernel.shape[-1])
        for l in weight_layers(model))])


def check_data(data, config, source, allow_other=False):
    """Raise CheckpointError unless the data are those `config` (read from checkpoint `source`)
    was trained on; return `config` recording this run's data.

    Other images or classes are always refused: a network cannot take other input or output
    sizes. Other data of the same sizes (another fingerprint) is refused unless `allow_other`
    (--allow-other-data): a model trained on other images scores near chance, with no error.
    """
    have = (tuple(data["image_shape"]), data["num_classes"])
    if have != (tuple(config.image_shape), config.num_classes):
        raise CheckpointError(
            f"{source}/ was trained on {'x'.join(map(str, config.image_shape))} images with "
            f"{config.num_classes} classes; this data has {'x'.join(map(str, have[0]))} images "
            f"with {have[1]} classes: pass the same --dataset (or none) as its training run")
    if not config.data_sha256:
        print(f"warning: {source}/ records no data fingerprint (an older checkpoint): cannot "
              f"check that it was trained on this data", file=sys.stderr)
    elif config.data_sha256 != data["sha256"] and not allow_other:
        raise CheckpointError(
            f"{source}/ was trained on other data ({config.data_source}, sha256 "
            f"{config.data_sha256[:12]}) than this run's ({data['source']}, sha256 "
            f"{data['sha256'][:12]}): pass the same --dataset (or none) as its training run, or "
            f"--allow-other-data if that is meant")
    return with_data(config, data)


def with_data(config, data):
    """`config` recording the sizes and fingerprint of `data`."""
    return configs.override(config, image_shape=data["image_shape"],
                            num_classes=data["num_classes"], data_source=data["source"],
                            data_sha256=data["sha256"])


def load_for_fine_tuning(dense_dir, config):
    """The stage-1 checkpoint's weights and SGD momentum, in a network built from `config`
    (the pruning stage's: no dropout, its own weight decay); (model, optimizer, config), the
    config's image shape and classes set to the checkpoint's.

    A checkpoint of another network or architecture is refused with one line naming both.
    """
    trained, meta = load_checkpoint(dense_dir, made_by="train_network_dense.py")
    saved = checkpoint_config(meta, config.network, dense_dir)
    config = configs.override(config, image_shape=saved.image_shape,
                              num_classes=saved.num_classes, data_source=saved.data_source,
                              data_sha256=saved.data_sha256)
    model = build_network(config)
    if [w.shape for w in trained.get_weights()] != [w.shape for w in model.get_weights()]:
        raise CheckpointError(f"{dense_dir}/ holds a {architecture(trained)} network; this stage "
                              f"builds {architecture(model)} "
                              f"(hidden_sizes, conv_filters in configs.py): retrain "
                              f"with train_network_dense.py or change configs.py")
    model.set_weights(trained.get_weights())
    optimizer = keras.optimizers.SGD(configs.learning_rate(config, 0), momentum=config.momentum)
    optimizer.build(model.trainable_variables)
    saved_optimizer = getattr(trained, "optimizer", None)  # None or absent: saved uncompiled
    theirs = getattr(saved_optimizer, "momentums", None) or []
    if [v.shape for v in theirs] == [v.shape for v in optimizer.momentums]:
        for mine, saved_momentum in zip(optimizer.momentums, theirs):
            mine.assign(saved_momentum)
    else:  # saved with another optimizer (Adam, ...) or with none
        kind = type(saved_optimizer).__name__ if saved_optimizer else "no optimizer"
        print(f"note: {dense_dir}/model.keras holds no SGD momentum (saved with {kind}): "
              f"fine-tuning starts from fresh momentum", file=sys.stderr)
    return model, optimizer, config


def checkpoint_config(meta, network, model_dir):
    """The config a checkpoint (its config.json, `meta`) was made with, checked to be of
    `network` (the --network flag): another network's checkpoint is one clear line."""
    saved = meta.get("config", {})
    if saved.get("network", "mlp") != network:
        raise CheckpointError(f"{model_dir}/ holds a {saved.get('network', 'mlp')} network, not "
                              f"{network}: pass --network {saved.get('network', 'mlp')}, or the "
                              f"folder of a {network} run")
    return configs.override(configs.pruned_config(network), image_shape=tuple(saved.get(
        "image_shape", (28, 28))), num_classes=saved.get("num_classes", 10),
        data_source=saved.get("data_source", ""), data_sha256=saved.get("data_sha256", ""))


def load_pruned(pruned_dir, network="mlp"):
    """The stage-2 checkpoint of `network`: (model, {layer name: bool mask}, its config), its
    masks checked.

    Refused with one line: a checkpoint of another stage (a dense one was never pruned) or
    network, a model whose conv and Dense layers are not all pruned, or a kernel with non-zeros
    where its mask prunes.
    """
    model, meta = load_checkpoint(pruned_dir, made_by="prune_network.py")
    config = checkpoint_config(meta, network, pruned_dir)
    masks = {key.removesuffix("/kernel"): mask for key, mask in get_masks(model).items()}
    if sorted(masks) != sorted(l.name for l in weight_layers(model)):
        raise CheckpointError(f"{pruned_dir}/model.keras has pruning masks on {sorted(masks)}, "
                              f"not on every weight layer: rerun prune_network.py")
    for l in weight_layers(model):
        if np.any(l.kernel.numpy()[~masks[l.name]]):
            raise CheckpointError(f"{pruned_dir}/model.keras has non-zero weights where its "
                                  f"masks prune them ({l.name}): rerun prune_network.py")
    return model, masks, config


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
