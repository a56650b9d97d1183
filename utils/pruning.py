"""Keras side of magnitude pruning: masks for a model's Dense kernels, applied to weights and momentum.

Works on any Keras 3 model built from Dense layers; the maths itself is in `pruning_utils`.
"""
import keras
import numpy as np

from utils import pruning_utils


def dense_kernels(model):
    """Kernel variables of the model's Dense layers, input to output."""
    return [layer.kernel for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def threshold_masks(model, threshold):
    """{kernel path: bool mask} keeping |w| >= threshold; ValueError if a layer would be emptied."""
    kernels = dense_kernels(model)
    masks = [pruning_utils.threshold_mask(k.numpy(), threshold) for k in kernels]
    pruning_utils.check_masks(masks, [layer_name(k.path) for k in kernels])
    return {k.path: m for k, m in zip(kernels, masks)}


def apply_masks(model, masks, optimizer=None):
    """Zero the masked kernel entries and, if given, their SGD momentum.

    The momentum must be zeroed too: a pruned weight with leftover momentum would move away
    from zero on the next step even with a zero gradient.
    """
    momentums = dict(zip((v.path for v in model.trainable_variables),
                         optimizer.momentums)) if optimizer is not None else {}
    for kernel in dense_kernels(model):
        if kernel.path in masks:
            mask = masks[kernel.path].astype(np.float32)
            kernel.assign(kernel.numpy() * mask)
            if kernel.path in momentums:
                momentums[kernel.path].assign(momentums[kernel.path].numpy() * mask)


def layer_name(kernel_path):
    """'network_dense/fc1/kernel' -> 'fc1'."""
    return kernel_path.split("/")[-2]


def sparsity_lines(masks):
    """Printable per-layer and total sparsity of {kernel path: mask}."""
    lines, kept, total = [], 0, 0
    for path, mask in masks.items():
        nnz = int(np.count_nonzero(mask))
        kept, total = kept + nnz, total + mask.size
        lines.append(f"  {layer_name(path):6s} {str(mask.shape):12s} {nnz:9,d} kept  "
                     f"sparsity {pruning_utils.sparsity(mask):6.1%}")
    lines.append(f"  {'total':6s} {'':12s} {kept:9,d} kept  sparsity {1 - kept / total:6.1%}")
    return lines
