"""One worker of MultiWorkerMirroredStrategy, run twice by ../test_distributed.py (TF_CONFIG names
its index; ports on 127.0.0.1): gradual pruning from fixed masks; each worker writes its masks and
weights, the chief also a checkpoint.

A custom training loop, not model.fit: Keras 3.15's fit fails under this strategy before the first
step, pruned or not (`_maybe_symbolic_build` reduces a batch across workers eagerly; measured).
The callback is driven by hand, as fit would (its batch and epoch hooks), and the optimizer
applies the masks as in fit.
"""
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from _models import users_conv_model, users_data
from pruning import (GradualPruning, PolynomialDecay, get_masks, prune_low_magnitude,
                     prunable_weights)

out = sys.argv[1]
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = users_conv_model()
    prune_low_magnitude(model, "layer-sparsity", 0.3)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    optimizer.build(model.trainable_variables)
gradual = GradualPruning(PolynomialDecay(final_sparsity=0.6, end_step=12, frequency=3),
                         "layer-sparsity")
gradual.set_model(model)
gradual.on_train_begin()
x, y = users_data()
data = strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
loss_of = keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, reduction="sum")


@tf.function
def train_step(x, y):
    def replica_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_of(y, model(x, training=True)) / 16
        optimizer.apply(tape.gradient(loss, model.trainable_variables),
                        model.trainable_variables)
    strategy.run(replica_step, (x, y))


for epoch in range(2):
    gradual.on_epoch_begin(epoch)
    for step, batch in enumerate(data):
        train_step(*batch)
        gradual.on_train_batch_end(step)
gradual.on_train_end()
np.savez(f"{out}/worker{index}.npz", **{f"mask:{k}": m for k, m in get_masks(model).items()},
         **{f"weight:{w.key}": w.variable.numpy() for w in prunable_weights(model)})
if index == 0:
    model.save(f"{out}/chief.keras")
print(f"worker {index} done")
