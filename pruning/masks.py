"""The pruning mask: a Keras constraint, which is what keeps a pruned weight at exactly zero.

Keras 3 optimizers apply each variable's `constraint` right after its update, inside the compiled
step (`BaseOptimizer.apply`, on every backend). A constraint that multiplies a weight by its 0/1
mask therefore holds every pruned weight at zero under any optimizer (momentum, Adam, AdamW's
decay), with `jit_compile` on or off, any `steps_per_execution` and under `tf.distribute`, while
`model.fit` stays untouched. A kept weight's update is the same as with masked gradients, because
Keras' optimizers work element-wise (global-norm clipping, `global_clipnorm`, would also count the
pruned weights' gradients). A compiled step reads the constraints when it is traced, so whoever
adds or changes a mask retraces the model's train function (`pruning.prune`).
"""
import base64
import zlib

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="pruning")
class PruningMask(keras.constraints.Constraint):
    """Constraint `w -> w * mask`.

    The mask is a non-trainable variable, so that a compiled step can shrink it
    (`GradualPruning`) and every replica of a tf.distribute strategy sees the same one
    ("only_first_replica": the replicas compute identical masks, the first one's is kept). It is
    saved in the config, bit-packed, because Keras saves no constraint's variables: the config is
    what rebuilds the layer on `load_model` and `clone_model`. `pattern` ("unstructured", "1x4",
    "2:4") records how it was made, for `pruning.summary`.

    Example:
      layer.kernel.constraint = PruningMask(np.abs(layer.kernel.numpy()) > 0.1)
    (`prune_low_magnitude` does this, and retraces the train step.)
    """

    def __init__(self, mask, shape=None, pattern="unstructured"):
        if isinstance(mask, str):  # from get_config: zlib-compressed packed bits, base64
            bits = np.unpackbits(np.frombuffer(zlib.decompress(base64.b64decode(mask)), np.uint8))
            mask = bits[:int(np.prod(shape))].reshape(shape)
        self.mask = keras.Variable(np.asarray(mask, np.float32), trainable=False,
                                   aggregation="only_first_replica", name="pruning_mask")
        self.pattern = str(pattern)
        self.update = None  # set by GradualPruning: recomputes the masks inside the train step

    def __call__(self, w):
        if self.update is not None:
            self.update()
        return w * keras.ops.cast(self.mask, w.dtype)

    def numpy(self):
        """The mask as a bool array."""
        return np.asarray(keras.ops.convert_to_numpy(self.mask.value)) > 0

    def get_config(self):
        packed = zlib.compress(np.packbits(self.numpy().ravel()).tobytes())
        return {"mask": base64.b64encode(packed).decode("ascii"), "shape": list(self.mask.shape),
                "pattern": self.pattern}
