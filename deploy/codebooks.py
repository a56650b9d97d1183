"""Trained quantization (Deep Compression's second stage): fine-tune the shared-weight codebooks.

Weight sharing (`formats.kmeans_1d`) stores each kept weight as an N-bit code into its
layer's codebook of 2^N centroids. Training then moves each centroid by the summed gradients of
the weights that share it, the codes fixed (Han et al. 2016, section 3.2): the stored format keeps
its size and only the centroids change.

Why a hand-written step and not `model.fit`: the trained variables are the codebooks, of which the
Keras kernels are a function (kernel = codebook[codes] where kept, 0 elsewhere); Keras' fit
trains the variables the model reads, the kernels. The gather's gradient is the per-centroid sum.
"""
import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from compression.coo import from_coo
from compression.formats import as_stored, kmeans_1d
from networks.builders import input_rows, kernels_restored, weight_layers
from training.evaluate import evaluate, logits_function
from training.fit import check_finite, dataset


def share_weights(layers, bits):
    """`layers` (`to_coo` dicts) with k-means "codebook" and "codes" added, "values" replaced by
    the centroids they share; `bits`: the code width, one for all or a list, one per layer."""
    widths = [bits] * len(layers) if isinstance(bits, int) else list(bits)
    shared = []
    for layer, width in zip(layers, widths, strict=True):
        codebook, codes = kmeans_1d(layer["values"], 2 ** width)
        shared.append(dict(layer, codebook=codebook, codes=codes, values=codebook[codes]))
    return shared


def choose_bits(model, layers, validation, budget, widths=range(2, 9)):
    """Each layer's code width: the smallest of `widths` at which sharing that layer's weights
    alone (k-means, the others float) keeps `model`'s validation accuracy within budget / L of
    the float one, L the number of layers (Bayesian Compression sets each layer's width from how
    precisely its weights must be known; this measures it). The losses do not add up: shared
    together by k-means, the layers can lose more than `budget` (the MLP 0.74 points, LeNet-5
    seed 123's variational point 0.42, no layer of it alone more than 0.04); the codebooks
    stored (trained, or k-means where those score better) kept the loss within `budget` in every
    deploy run looked at (the MLP and 23 LeNet points, 7 December; at most 0.18 points, on that
    LeNet-5), and the stored accuracy is measured on the file. Returns (widths, the float and
    the shared validation accuracy, every width tried: {layer: {bits: accuracy}}); `model`'s
    kernels are put back as they were."""
    with kernels_restored(model):
        logits_fn = logits_function(model)
        assign_layers(model, layers)
        full = evaluate(logits_fn, *validation)[0]
        chosen, tried = [], {}
        for i, layer in enumerate(layers):
            tried[layer["name"]] = {}
            for bits in sorted(widths):
                assign_layers(model, layers[:i] + share_weights([layer], bits) + layers[i + 1:])
                accuracy = evaluate(logits_fn, *validation)[0]
                tried[layer["name"]][bits] = accuracy
                if full - accuracy <= budget / len(layers):
                    break
            chosen.append(bits)
        assign_layers(model, share_weights(layers, chosen))
        together = evaluate(logits_fn, *validation)[0]
    return chosen, dict(float=full, shared=together, tried=tried)


def _kernel_rows(l, layer):
    """The kernel row of each stored weight of `l`: its row, or after a gather (a shrunk model,
    `networks.builders.input_rows`) the row of the gathered feature."""
    rows, gathered = l["indices"][:, 0], input_rows(layer)
    if gathered is None:
        return rows
    position = np.full(int(l["shape"][0]), -1)
    position[gathered] = np.arange(len(gathered))
    return position[rows]


def train_codebooks(model, layers, data, epochs, learning_rate, batch_size=100, seed=0,
                    momentum=0.9, log=print):
    """Fine-tune the codebooks of `share_weights`' `layers` (the weight layers of `model`, in
    order) for `epochs` with SGD + momentum on the cross-entropy; returns (layers with the
    trained codebooks and values, history of validation accuracy per epoch).

    `model`'s kernels are overwritten with the shared weights (its biases are not trained), the
    codebooks rounded at the end as the shared formats store them (`formats.as_stored`).
    """
    kernels = [l.kernel for l in weight_layers(model)]
    if [l["name"] for l in layers] != [l.name for l in weight_layers(model)]:
        raise ValueError("layers must be the model's weight layers, in order")
    flat = [tf.constant(_kernel_rows(l, layer).astype(np.int64) * int(l["shape"][1])
                        + l["indices"][:, 1]) for l, layer in zip(layers, weight_layers(model))]
    codes = [tf.constant(l["codes"].astype(np.int32)) for l in layers]
    codebooks = [keras.Variable(l["codebook"], name=f"{l['name']}_codebook") for l in layers]

    def assign_kernels():
        for kernel, positions, code, codebook in zip(kernels, flat, codes, codebooks):
            values = tf.gather(codebook, code)
            kernel.assign(tf.reshape(tf.scatter_nd(positions[:, None], values,
                                                   [int(np.prod(kernel.shape))]), kernel.shape))

    optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum)
    optimizer.build(codebooks)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, kernels)
        optimizer.apply_gradients([
            (tf.math.unsorted_segment_sum(tf.gather(tf.reshape(g, [-1]), positions), code,
                                          codebook.shape[0]), codebook)
            for g, positions, code, codebook in zip(grads, flat, codes, codebooks)])
        assign_kernels()
        return loss

    assign_kernels()
    logits_fn, history = logits_function(model), []
    x, y = data["train"]
    for epoch in range(1, epochs + 1):
        batches = dataset(x, y, batch_size, seed + epoch)
        with tqdm(batches, total=len(y) // batch_size, desc=f"codebook epoch {epoch}/{epochs}",
                  unit="step", leave=False, disable=None) as bar:
            for xb, yb in bar:
                loss = float(step(xb, yb))
                check_finite(loss, f"in codebook epoch {epoch}", data)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        val_accuracy, _ = evaluate(logits_fn, *data["validation"])
        history.append(dict(epoch=epoch, val_accuracy=val_accuracy))
        log(f"codebook epoch {epoch}/{epochs}  val acc {val_accuracy:.4f}")
    for codebook in codebooks:  # rounded as the file will hold them, and the model runs them
        codebook.assign(as_stored(codebook.numpy()))
    assign_kernels()
    return [dict(l, codebook=c.numpy(), values=c.numpy()[l["codes"]])
            for l, c in zip(layers, codebooks)], history


def assign_layers(model, layers):
    """Write `layers` (`to_coo` dicts, e.g. as a storage format decodes them) into the kernels of
    `model`'s weight layers, in order."""
    for layer, l in zip(weight_layers(model), layers):
        rows, matrix = input_rows(layer), from_coo(l)
        layer.kernel.assign((matrix if rows is None else matrix[rows]).reshape(layer.kernel.shape))


def quantize(model, layers, bits, epochs, data, learning_rate, seed=0):
    """Trained quantization of `model`'s pruned `layers` at `bits` (one width, or one per layer):
    (the shared layers to store, results). The trained codebooks are kept only if they beat
    k-means' on the validation split.

    `model`'s kernels are used to score both and are put back as they were before it returns.
    """
    with kernels_restored(model):
        shared = share_weights(layers, bits)
        logits_fn = logits_function(model)
        assign_layers(model, shared)  # the k-means model, to score it
        kmeans = {split: evaluate(logits_fn, *data[split])[0] for split in ("validation", "test")}
        trained, history = train_codebooks(model, shared, data, epochs, learning_rate, seed=seed)
        after = {split: evaluate(logits_fn, *data[split])[0] for split in ("validation", "test")}
    keep = after["validation"] > kmeans["validation"]
    return (trained if keep else shared), dict(bits=bits, epochs=epochs, kmeans=kmeans,
                                               trained=after, history=history,
                                               stored="trained" if keep else "k-means")
