"""The networks as plain Keras 3 models: the original repo's 784-512-512-10 MLP and the
papers' LeNet-300-100 and LeNet-5 (configs.NETWORKS), built from a config."""
import contextlib

import keras
import numpy as np

from networks.layers import ByteDropout
from pruning import SelectFeatures, prunable_layers


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


@contextlib.contextmanager
def kernels_restored(model):
    """The block may overwrite the model's kernels (to score a weight-shared or a further pruned
    version of it); they are put back as they were when the block ends, however it ends."""
    originals = [layer.kernel.numpy() for layer in weight_layers(model)]
    try:
        yield
    finally:
        for layer, original in zip(weight_layers(model), originals):
            layer.kernel.assign(original)


def _gather_before(layer):
    """The `pruning.SelectFeatures` gather a shrunk model puts in front of `layer`, or None."""
    source = layer.input._keras_history.operation
    return source if isinstance(source, SelectFeatures) else None


def input_rows(layer):
    """The input features a weight layer of a shrunk model reads, as indices into its input
    before the `pruning.SelectFeatures` gather in front of it (so the rows of its kernel
    scattered back to the full width); None where no gather precedes it."""
    gather = _gather_before(layer)
    return None if gather is None else np.asarray(gather.indices)


def full_width_kernel(layer):
    """The kernel of `layer` with a zero row for every input feature its gather drops: the
    matrix the storage formats store (whose zeros they do not)."""
    kernel, gather = layer.kernel.numpy(), _gather_before(layer)
    if gather is None:
        return kernel
    full = np.zeros((int(gather.input.shape[-1]), kernel.shape[-1]), kernel.dtype)
    full[gather.indices] = kernel
    return full


def weight_layers(model):
    """The model's conv and Dense layers, input to output: the ones whose kernels are pruned."""
    return prunable_layers(model)


def positions(model):
    """{weight layer's name: the positions its kernel is applied at for one image}: a conv's
    output pixels, 1 for a Dense layer; a weight's multiply-adds per image are these."""
    return {l.name: int(np.prod(l.output.shape[1:-1])) for l in weight_layers(model)}


def multiply_adds(model):
    """Multiply-adds of one image through every weight layer, dense."""
    at = positions(model)
    return sum(int(np.prod(l.kernel.shape)) * at[l.name] for l in weight_layers(model))


def layer_sizes(model):
    """The sizes structured pruning changes, as the papers write them (Louizos et al. 2018):
    every conv's filters, the first Dense layer's input features, every hidden Dense layer's
    units, e.g. '784-300-100' for LeNet-300-100 and '20-50-800-500' for LeNet-5. Read from the
    kernels, so a shrunk model (`pruning.shrink`, a gather before fc1) gives its own."""
    layers = weight_layers(model)
    dense = [l for l in layers if isinstance(l, keras.layers.Dense)]
    sizes = [l.kernel.shape[-1] for l in layers if not isinstance(l, keras.layers.Dense)]
    sizes += [dense[0].kernel.shape[0]] + [l.kernel.shape[-1] for l in dense[:-1]]
    return "-".join(map(str, sizes))


def architecture(model):
    """'784-512-512-10' or '784-conv20-conv50-500-10': the input size, then the weight layers."""
    return "-".join([str(model.input_shape[-1]), *(
        ("" if isinstance(l, keras.layers.Dense) else "conv") + str(l.kernel.shape[-1])
        for l in weight_layers(model))])
