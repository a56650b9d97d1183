"""Run by ../test_distributed.py in its own interpreter: fixed and gradual pruning under
tf.distribute.MirroredStrategy over two logical CPU devices."""
import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from _models import users_conv_model, users_data  # noqa: E402
from pruning import (GradualPruning, PolynomialDecay, prune_low_magnitude,  # noqa: E402
                     pruned_weights)

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = users_conv_model()
    prune_low_magnitude(model, "layer-sparsity", 0.3)
    # steps_per_execution stays 1: Keras 3.15's fit fails under MirroredStrategy with more,
    # pruned or not (measured)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(*users_data(), batch_size=16, epochs=2, verbose=0, callbacks=[GradualPruning(
    PolynomialDecay(final_sparsity=0.6, end_step=12, frequency=3), "layer-sparsity")])
for weight in pruned_weights(model):
    masks = [np.asarray(m) for m in
             strategy.experimental_local_results(weight.pruning_mask.mask.value)]
    kernels = [np.asarray(k) for k in strategy.experimental_local_results(weight.variable.value)]
    assert len(masks) == len(kernels) == 2, weight.key
    assert all((m == masks[0]).all() for m in masks), f"{weight.key}: masks differ on replicas"
    assert abs(1 - masks[0].mean() - 0.6) < 0.01, f"{weight.key}: sparsity {1 - masks[0].mean()}"
    assert all(not k[masks[0] == 0].any() for k in kernels), f"{weight.key}: a pruned weight moved"
print("replicas 2, masks identical, zeros hold")
