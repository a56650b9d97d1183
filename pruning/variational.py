"""Sparse variational dropout: pruning that training learns, for Dense and Conv1D/2D/3D layers.

Molchanov, Ashukha & Vetrov (2017), "Variational dropout sparsifies deep neural networks". Each
weight gets its own Gaussian noise, w = theta + sigma * eps (sigma^2 = alpha * theta^2: dropout
of rate alpha / (1 + alpha) per weight), and the loss gets the KL divergence of that posterior
from the log-uniform prior, divided by the number of training examples. The KL falls as alpha
rises, so every weight the data do not need is pushed to a large alpha; a weight with
log alpha > 3 (noise about 4.5x its value) is then pruned, with no sparsity given: the data
choose it, and it differs from layer to layer (LeNet-5's conv layers keep far more than its
fully connected ones). Training uses the local reparameterisation trick: the pre-activations are
sampled, mean x @ theta and variance x^2 @ sigma^2, so each example gets its own noise for one
more matrix product (or convolution).

    vd = pruning.variational_dropout(model, train_size=len(x))  # a copy, Dense/Conv* variational
    vd.compile(keras.optimizers.Adam(1e-3), loss, metrics)      # Adam: sigma's gradients are tiny
    vd.fit(x, y, epochs=20, callbacks=[pruning.KLWarmup(5)])
    pruned = pruning.strip_variational(vd)  # the original layers, log alpha > 3 exactly 0, masked
    # pattern="units" or "inputs": a noise per unit or filter, or per input feature or channel,
    # which prunes whole ones; then pruning.shrink

Why layers of our own and not a mask: the noise and the KL need theta and log sigma^2 inside the
forward pass, which a constraint or a callback cannot reach. Why not TensorFlow Probability's
DenseFlipout: it is TensorFlow-only, and its KL is for a Gaussian prior, which does not sparsify.
"""
import math
import numbers
import warnings

import keras
from keras import ops

from pruning import registry
from pruning.prune import retrace, set_mask

# -KL(q || log-uniform prior) per weight ~ K1 sigmoid(K2 + K3 log alpha) - log1p(1/alpha) / 2 - K1,
# Molchanov et al.'s approximation (their eq. 14), accurate to 0.01 for every alpha.
K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_RANGE = (-10.0, 10.0)  # log alpha is clipped to it, as in the paper's code
THRESHOLD = 3.0                  # prune where log alpha > this (the paper's)
_EPSILON = 1e-8                  # in log theta^2 and in the standard deviation's square root


def kl_divergence(theta, log_sigma2):
    """The approximate KL(q(w | theta, sigma) || log-uniform prior), summed over the weights.

    >>> kl = kl_divergence(ops.ones((3,)), ops.full((3,), 10.0))  # log alpha 10: pruned
    >>> round(float(kl), 3)   # tends to 0 as alpha grows (K1 - K1 sigmoid(K2 + 10 K3) - ...)
    0.0
    """
    log_alpha = log_alpha_of(theta, log_sigma2)
    negative = K1 * ops.sigmoid(K2 + K3 * log_alpha) - 0.5 * ops.log1p(ops.exp(-log_alpha)) - K1
    return -ops.sum(negative)


def log_alpha_of(theta, log_sigma2):
    """log alpha = log sigma^2 - log theta^2, clipped to LOG_ALPHA_RANGE."""
    return ops.clip(log_sigma2 - ops.log(ops.square(theta) + _EPSILON), *LOG_ALPHA_RANGE)


def _standard_normal(shape, generator, dtype):
    """keras.random.normal, but on TensorFlow with the Philox generator: under XLA on CPU the
    default ("auto_select") made a LeNet-300-100 training step 3.7x slower (measured: 2.4 s
    against 0.65 s an epoch of 100 steps; the dense network's is 0.19 s)."""
    if keras.backend.backend() != "tensorflow":
        return keras.random.normal(shape, dtype=dtype, seed=generator)
    import tensorflow as tf  # only on this backend
    seed = tf.cast(tf.math.floormod(generator.next(), tf.int32.max - 1), tf.int32)
    return tf.random.stateless_normal(shape, seed=seed, dtype=dtype, alg="philox")


def _check_train_size(train_size):
    if not isinstance(train_size, numbers.Integral) or isinstance(train_size, bool) or \
            train_size < 1:
        raise ValueError(f"train_size (the number of training examples, which divides the KL) "
                         f"must be an int >= 1, got {train_size!r}")


# what one noise multiplies: a weight, an output unit (filter), or an input feature (channel)
PATTERNS = ("unstructured", "units", "inputs")


class _Variational:
    """What the variational layers add to their Keras base class: log sigma^2 per kernel entry,
    the KL weight (raised by `KLWarmup`), the noisy training pass and the pruned inference pass.
    A subclass says how to multiply an input by a kernel (`_linear`) and how to shape a vector of
    its input channels or its units to broadcast over an input or an output (`_feature_shape`).

    With pattern="units" or "inputs" (Louizos, Ullrich & Welling 2017's group sparsity, with the
    log-uniform prior of Molchanov et al.): one multiplicative noise per output unit or filter, or
    per input feature or channel, instead, z ~ N(theta, sigma^2), theta a scale per group, the
    kernel itself deterministic: on a unit's pre-activation, or on an input before the product
    (local reparameterisation: mean (x theta) @ W, variance (x^2 sigma^2) @ W^2). A group with
    log alpha = log sigma^2 / theta^2 > threshold goes whole, and `shrink` then removes it: input
    features are what Bayesian Compression prunes in fully connected layers (pixels of the first,
    and through the coupling the units of the layer before each other one)."""

    def __init__(self, *args, train_size, threshold=THRESHOLD, log_sigma2_init=-10.0,
                 seed=None, pattern="unstructured", **kwargs):
        super().__init__(*args, **kwargs)
        _check_train_size(train_size)
        self.train_size, self.threshold = int(train_size), float(threshold)
        self.log_sigma2_init, self.seed, self.pattern = float(log_sigma2_init), seed, pattern
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        super().build(input_shape)
        shape = self.kernel.shape if self.pattern == "unstructured" else \
            (self.kernel.shape[self._group_axis()],)
        self.log_sigma2 = self.add_weight(
            name="log_sigma2", shape=shape,
            initializer=keras.initializers.Constant(self.log_sigma2_init))
        if self.pattern != "unstructured":  # (saved by position: the names are for reading)
            self.scale = self.add_weight(name=f"{self.pattern[:-1]}_scale", shape=shape,
                                         initializer="ones")
        self.kl_weight = self.add_weight(name="kl_weight", shape=(), trainable=False,
                                         initializer="ones")

    # Dense saves only its kernel and bias (its own save_own_variables, for quantization): save
    # every variable, as a plain Layer does.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def _group_axis(self):
        """The kernel axis along which one group noise runs: the layer table's output axis
        ("units") or input axis ("inputs") of the kind (`pruning.registry`)."""
        layout = registry.layout_of(self, "kernel")
        (axis,) = layout.outputs if self.pattern == "units" else layout.inputs
        return axis % len(self.kernel.shape)

    def _along_kernel(self, groups):
        """A vector of the groups reshaped to broadcast along the kernel's group axis."""
        shape = [1] * len(self.kernel.shape)
        shape[self._group_axis()] = -1
        return ops.reshape(groups, shape)

    def _noisy(self):
        """What the noise multiplies: the kernel, or the groups' scales."""
        return self.kernel if self.pattern == "unstructured" else self.scale

    def log_alpha(self):
        return log_alpha_of(self._noisy(), self.log_sigma2)

    def kept(self):
        """Where log alpha <= threshold, as the kernel's dtype, shaped to multiply the kernel."""
        kept = ops.cast(self.log_alpha() <= self.threshold, self.kernel.dtype)
        return kept if self.pattern == "unstructured" else self._along_kernel(kept)

    def pruned_kernel(self):
        """The kernel the plain layer gets: times the groups' scales, if any; log alpha >
        threshold zero."""
        scale = 1.0 if self.pattern == "unstructured" else self._along_kernel(self.scale)
        return self.kernel * scale * self.kept()

    def call(self, inputs, training=None):
        if training:
            # The mean in the compute dtype (float16 under mixed_float16), but the variance, its
            # square root and the KL in at least float32: float16 squares an input above 256 to
            # infinity, rounds the epsilon to 0 (an infinite gradient where the variance is 0)
            # and overflows a KL summed over more than ~12,000 weights.
            wide = "float32" if self.compute_dtype in ("float16", "bfloat16") else \
                self.compute_dtype
            log_sigma2 = ops.cast(self.log_sigma2, wide)
            if self.pattern == "unstructured":
                mean = self._linear(inputs, self.kernel)
                variance = self._linear(ops.square(ops.cast(inputs, wide)), ops.exp(log_sigma2))
            elif self.pattern == "units":  # the pre-activation times one noise per unit
                product = self._linear(inputs, self.kernel)  # (channels first or last)
                shape = self._feature_shape(self.kernel.shape[-1])
                mean = product * ops.reshape(self.scale, shape)
                variance = ops.square(ops.cast(product, wide)) * ops.reshape(ops.exp(log_sigma2),
                                                                             shape)
            else:  # each input feature times its noise, then the product
                shape = self._feature_shape(self.kernel.shape[self._group_axis()])
                mean = self._linear(inputs * ops.reshape(self.scale, shape), self.kernel)
                variance = self._linear(
                    ops.square(ops.cast(inputs, wide)) * ops.reshape(ops.exp(log_sigma2), shape),
                    ops.square(ops.cast(self.kernel, wide)))
            noise = _standard_normal(ops.shape(mean), self.seed_generator, mean.dtype)
            std = ops.sqrt(ops.cast(variance, "float32") + _EPSILON)
            outputs = mean + ops.cast(std, mean.dtype) * noise
            kl = kl_divergence(ops.cast(self._noisy(), "float32"),
                               ops.cast(self.log_sigma2, "float32"))
            self.add_loss(ops.cast(self.kl_weight, "float32") * kl / self.train_size)
        else:  # the network as it will be pruned
            outputs = self._linear(inputs, self.pruned_kernel())
        if self.use_bias:
            outputs = outputs + ops.reshape(self.bias, self._feature_shape(self.kernel.shape[-1]))
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self):
        return {**super().get_config(), "train_size": self.train_size,
                "threshold": self.threshold, "log_sigma2_init": self.log_sigma2_init,
                "seed": self.seed, "pattern": self.pattern}


@keras.saving.register_keras_serializable(package="pruning")
class VariationalDense(_Variational, keras.layers.Dense):
    """keras.layers.Dense with sparse variational dropout on its kernel (see the module)."""

    def _linear(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def _feature_shape(self, n):
        return (n,)


class _VariationalConv(_Variational):
    def _linear(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)

    def _feature_shape(self, n):
        if self.data_format == "channels_last":
            return (1,) * (self.rank + 1) + (n,)
        return (1, n) + (1,) * self.rank


@keras.saving.register_keras_serializable(package="pruning")
class VariationalConv1D(_VariationalConv, keras.layers.Conv1D):
    """keras.layers.Conv1D with sparse variational dropout on its kernel."""


@keras.saving.register_keras_serializable(package="pruning")
class VariationalConv2D(_VariationalConv, keras.layers.Conv2D):
    """keras.layers.Conv2D with sparse variational dropout on its kernel."""


@keras.saving.register_keras_serializable(package="pruning")
class VariationalConv3D(_VariationalConv, keras.layers.Conv3D):
    """keras.layers.Conv3D with sparse variational dropout on its kernel."""


# Exact classes only: a subclass of Dense (or Conv1D "causal" padding, which Keras pads before
# its convolution_op) may compute something else than the base's x @ kernel.
VARIATIONAL = {keras.layers.Dense: VariationalDense, keras.layers.Conv1D: VariationalConv1D,
               keras.layers.Conv2D: VariationalConv2D, keras.layers.Conv3D: VariationalConv3D}
_PLAIN = {v: k for k, v in VARIATIONAL.items()}
_OWN_ARGS = ("train_size", "threshold", "log_sigma2_init", "seed", "pattern")


def _convertible(layer):
    return type(layer) in VARIATIONAL and getattr(layer, "padding", None) != "causal"


def _check_graph(model, what):
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet; build it first (give it a "
                         f"keras.Input, or call it once on a batch)")
    if not isinstance(model, keras.Sequential) and not hasattr(model, "_nodes_by_depth"):
        raise ValueError(f"{what} rebuilds the model with keras.models.clone_model, which "
                         f"needs a Sequential or functional model; {model.name!r} is a "
                         f"subclassed {type(model).__name__}: build it functionally")


def _clone(model, convert):
    """keras.models.clone_model, nested models too, with `convert(layer)` -> the new layer, or
    None for a fresh copy of the same kind; the weights are not copied."""
    def clone(layer):
        new = convert(layer)
        return layer.__class__.from_config(layer.get_config()) if new is None else new

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def _copy_weights(target, source, masks=None):
    """Copy each layer's weights from `source` into the layer of the same path in `target`; a
    variational layer and its plain counterpart share their kernel (times its mask in `masks`,
    if given) and bias."""
    targets = {path: l for l, path, _ in registry.walk(target)}
    for old, path, _ in registry.walk(source):
        if isinstance(old, keras.Model) or not old.weights:
            continue
        new = targets.get(path)
        if new is None:
            raise ValueError(f"model {target.name!r} has no layer {path!r}: give the model "
                             f"variational_dropout was called on")
        if isinstance(old, _Variational) or isinstance(new, _Variational):
            if masks is not None and isinstance(old, _Variational):
                kernel = ops.convert_to_numpy(old.pruned_kernel()) * masks[f"{path}/kernel"]
            else:
                kernel = ops.convert_to_numpy(old.kernel.value)
            new.kernel.assign(kernel)
            if old.use_bias:  # a NumPy copy: on JAX, two variables must not share a buffer
                new.bias.assign(ops.convert_to_numpy(old.bias.value))
        else:
            new.set_weights(old.get_weights())


def variational_dropout(model, train_size, layers=None, threshold=THRESHOLD,
                        log_sigma2_init=-10.0, seed=None, pattern="unstructured"):
    """A copy of `model` whose Dense and Conv1D/2D/3D layers train with sparse variational
    dropout (their weights copied: start from a trained model, as the paper's LeNets did).

    Args:
      model: a built Sequential or functional Keras 3 model (nested ones too); its other layers
        are copied as they are, and the other prunable kinds (EinsumDense, Depthwise/Separable
        convs, Embedding, RNN cells, transposed convs) are named in a warning, not converted.
      train_size: the number of training examples; the KL is divided by it, as the ELBO does
        for a loss averaged over a batch.
      layers: None (every convertible layer) or a list of layer names.
      threshold: log alpha above which a weight counts as pruned (inference, `strip_variational`).
      log_sigma2_init: the initial log sigma^2 (-10: almost no noise, the trained net unchanged).
      seed: of the noise.
      pattern: "unstructured" (Molchanov et al.: a noise per weight, sparse kernels), "units"
        (Louizos et al.: a noise per output unit or filter, whole units pruned; the output
        layer's units are the classes: leave it out with `layers`) or "inputs" (a noise per
        input feature or channel: whole rows of each kernel; not for grouped convolutions).
        `strip_variational` masks the groups with that pattern, and `pruning.shrink` removes
        them.
    A weight's existing constraint (a `PruningMask` of an earlier pruning) is kept: its zeros
    stay zero. Compile the copy with Adam (log sigma^2's gradients are ~1/train_size).
    """
    _check_graph(model, "variational_dropout")
    _check_train_size(train_size)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or \
            not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number (log alpha), got {threshold!r}")
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    names = {l.name for l, _, _ in registry.walk(model)}
    if layers is not None and (isinstance(layers, str) or not set(layers) <= names):
        raise ValueError(f"layers must be a list of layer names of model {model.name!r}, got "
                         f"{layers!r}")

    def convert(layer):
        if not _convertible(layer) or layers is not None and layer.name not in layers:
            return None
        if pattern == "inputs" and getattr(layer, "groups", 1) != 1:
            raise ValueError(f"pattern='inputs': {layer.name!r} is a grouped convolution (groups="
                             f"{layer.groups}), whose kernel holds a group's channels, not the "
                             f"input's; leave it out with `layers`, or use pattern='units'")
        return VARIATIONAL[type(layer)].from_config({
            **layer.get_config(), "train_size": train_size, "threshold": threshold,
            "log_sigma2_init": log_sigma2_init, "seed": seed, "pattern": pattern})

    copy = _clone(model, convert)
    # what stays plain: other kinds, and Dense / Conv layers inside wrappers clone_model does
    # not recurse into (TimeDistributed, Bidirectional)
    skipped = [w.key for w in registry.scan(copy)[0] if not isinstance(w.layer, _Variational)
               and (layers is None or w.layer.name in layers)]
    if layers is not None and skipped:
        raise ValueError(f"layers: {skipped} cannot get variational dropout (only Dense and "
                         f"Conv1D/2D/3D layers of the model's graph can)")
    if not variational_layers(copy):
        raise ValueError(f"model {model.name!r} has no Dense or Conv1D/2D/3D layer in its graph: "
                         f"nothing to convert")
    if skipped:
        warnings.warn(f"pruning: variational_dropout leaves {skipped} as they are (only Dense and "
                      f"Conv1D/2D/3D layers of the model's graph get variational dropout)",
                      stacklevel=2)
    _copy_weights(copy, model)
    return copy


def variational_layers(model):
    """{path ("block/fc1"): layer} of the variational layers of `model`, nested ones too."""
    return {path: l for l, path, _ in registry.walk(model) if isinstance(l, _Variational)}


def variational_masks(model):
    """{weight key ("fc1/kernel"): bool mask, True where log alpha <= the layer's threshold} of
    every variational layer: what `strip_variational` will keep (and `pruning.sparsity` of its
    values, the sparsity reached so far)."""
    return {f"{path}/kernel": (ops.convert_to_numpy(l.kept()) != 0)  # a group's: along its axis
            & (ops.convert_to_numpy(l.kernel.value) != 0)  # an earlier pruning's zeros too
            for path, l in variational_layers(model).items()}


def strip_variational(model, into=None):
    """The plain network of a `variational_dropout` model: its original layer kinds, each
    variational kernel's weights with log alpha > threshold set to exactly 0 and held there by a
    `PruningMask` (fine-tune it like any pruned model), its other weights copied.

    `into`: a model of the same architecture (the original, say) to write into, in place, instead
    of a new one; returned either way.
    """
    _check_graph(model, "strip_variational")
    if not variational_layers(model):
        raise ValueError(f"model {model.name!r} has no variational layer: nothing to strip")
    masks = variational_masks(model)
    empty = sorted(key for key, mask in masks.items() if not mask.any())
    if empty:  # a network that predicts nothing from its inputs: said, not returned silently
        warnings.warn(f"pruning: strip_variational prunes every weight of {empty} (log alpha > "
                      f"threshold everywhere): the network's output no longer depends on its "
                      f"input there; train shorter, with a smaller KL weight, or a higher "
                      f"threshold", stacklevel=2)

    def convert(layer):
        if not isinstance(layer, _Variational):
            return None
        config = {k: v for k, v in layer.get_config().items() if k not in _OWN_ARGS}
        return _PLAIN[type(layer)].from_config(config)

    if into is None:
        into = _clone(model, convert)
    _copy_weights(into, model, masks)
    patterns = {f"{path}/kernel": l.pattern for path, l in variational_layers(model).items()}
    for weight in registry.scan(into)[0]:  # replacing the mask of an earlier pruning, if any
        if weight.key in masks:
            set_mask(weight, masks[weight.key], patterns[weight.key])
    retrace(into)
    return into


class KLWarmup(keras.callbacks.Callback):
    """Raise the KL's weight linearly from 1/epochs to 1 over the first `epochs` epochs, so that
    the noise grows while the network adapts to it (the paper's code does this); one epoch
    means no warm-up."""

    def __init__(self, epochs):
        super().__init__()
        if not isinstance(epochs, numbers.Integral) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
        self.epochs = int(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        layers = variational_layers(self.model)
        if not layers:
            raise ValueError("KLWarmup: the model has no variational layer (see "
                             "pruning.variational_dropout)")
        for layer in layers.values():
            layer.kl_weight.assign(min(1.0, (epoch + 1) / self.epochs))

