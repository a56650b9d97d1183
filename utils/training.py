"""Compiled SGD training of a Keras classifier, optionally under pruning masks (fixed, or shrinking
on a gradual schedule).

Written as a custom loop rather than `model.fit` for two reasons: the pruning masks must be applied
to the gradients inside the compiled step (fit has no hook for that without subclassing the model),
and speed. At batch 100 on a 2-core CPU the matrix products take under 1 ms a step, so everything
around them counts: many steps run per compiled call (a `tf.range` loop over a chunk of batches,
data already in memory), the loop is compiled with XLA, which fuses the element-wise work
(optimizer update, masks, weight decay) into a few kernels, and weight decay is added to the
gradient rather than computed as a loss (`benchmarks/bench_training.py` measures the result).
"""
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import configs
from networks.network_base import cross_entropy, evaluate, logits_function
from utils import pruning, pruning_utils

STEPS_PER_CALL = 50  # training steps per compiled call; the progress bar moves once per call


class Trainer:
    """Trains `model` with `optimizer` on in-memory (x, y), keeping masked kernel entries at zero.

    `weight_decay` is L2 on every weight matrix (variables of rank >= 2, not biases): the loss
    would gain decay x sum(w^2), so its gradient 2 x decay x w is added to theirs.
    `masks` maps a kernel variable's path to a 0/1 array of its shape. Masked entries get a zero
    gradient; with their momentum zeroed at prune time (see `pruning.apply_masks`), SGD's update
    of them is exactly 0, so they stay exactly zero however long we train.
    `schedule` (a `pruning.GradualSchedule`) recomputes the masks inside the compiled step as
    training goes; it needs `masks` for the kernels it prunes (all ones to start dense).
    """

    def __init__(self, model, optimizer, x, y, masks=None, weight_decay=0.0, schedule=None):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.x, self.y = tf.constant(x), tf.constant(y)
        masks = masks or {}
        self.masks = [tf.Variable(masks[v.path], dtype=v.dtype, trainable=False)
                      if v.path in masks else None for v in model.trainable_variables]
        self.decay = [2 * weight_decay if len(v.shape) >= 2 else 0.0
                      for v in model.trainable_variables]
        if not optimizer.built:  # its momentum slots must exist for the masks to reach them
            optimizer.build(model.trainable_variables)
        momentums = pruning.momentum_of(model, optimizer)
        self.momentums = [momentums.get(v.path) for v in model.trainable_variables]
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        # Not XLA with a schedule: in an XLA-compiled tf.range loop the masks were never updated
        # (measured with TF 2.21; the same loop without XLA, or unrolled, updates them).
        self._run_steps = tf.function(self._steps, jit_compile=schedule is None)

    def current_masks(self):
        """{kernel path: bool mask} as they are now."""
        return {v.path: m.numpy() > 0 for v, m in zip(self.model.trainable_variables, self.masks)
                if m is not None}

    def _update_masks(self):
        """Gradual pruning: at the schedule's update steps shrink the masks to its sparsity, and
        keep the weights and momentum under the masks."""
        pruned = [(v, m, mom) for v, m, mom in
                  zip(self.model.trainable_variables, self.masks, self.momentums) if m is not None]
        masks = [m.read_value() for _, m, _ in pruned]
        kernels = [v.value for v, _, _ in pruned]
        step = self.step.read_value()
        new_masks = tf.cond(
            self.schedule.is_update_step(step),
            lambda: [m * new for m, new in zip(masks, self.schedule.masks(kernels, step))],
            lambda: masks)
        for (variable, mask, momentum), new in zip(pruned, new_masks):
            mask.assign(new)
            variable.assign(variable * new)
            if momentum is not None:
                momentum.assign(momentum * new)

    def _step(self, batch):
        if self.schedule is not None:
            self._update_masks()
        self.step.assign_add(1)
        x, y = tf.gather(self.x, batch), tf.gather(self.y, batch)
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            data_loss = tf.reduce_mean(cross_entropy(y, logits))
            loss = (data_loss + tf.add_n(self.model.losses)) if self.model.losses else data_loss
        grads = tape.gradient(loss, self.model.trainable_variables)
        grads = [g + d * v if d else g
                 for g, d, v in zip(grads, self.decay, self.model.trainable_variables)]
        # Why mask here: the gradient of a pruned weight is generally non-zero (its neighbours
        # still use the inputs), so without this it would grow back after the first step.
        grads = [g if m is None else g * m for g, m in zip(grads, self.masks)]
        self.optimizer.apply(grads, self.model.trainable_variables)
        hits = tf.argmax(logits, 1, output_type=tf.int32) == y
        return data_loss, tf.reduce_sum(tf.cast(hits, tf.float32))

    def _steps(self, batches):
        """Run one training step per row of `batches` (example indices); summed loss and hits."""
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(tf.shape(batches)[0]):
            loss, hits = self._step(batches[i])
            loss_sum += loss
            correct += hits
        return loss_sum, correct

    def train_epoch(self, batch_size, rng, desc="train"):
        """One pass over the shuffled data (remainder dropped); running (accuracy, loss)."""
        steps = len(self.y) // batch_size
        batches = rng.permutation(len(self.y))[:steps * batch_size].reshape(steps, batch_size)
        loss_sum = correct = 0.0
        # disable=None: a bar only on a terminal; a log file gets the one line per epoch instead
        with tqdm(total=steps, desc=desc, unit="step", leave=False, disable=None) as bar:
            for start in range(0, steps, STEPS_PER_CALL):
                chunk = tf.constant(batches[start:start + STEPS_PER_CALL], tf.int32)
                loss, hits = self._run_steps(chunk)
                loss_sum, correct = loss_sum + float(loss), correct + float(hits)
                bar.update(len(chunk))
                bar.set_postfix(loss=f"{loss_sum / min(start + STEPS_PER_CALL, steps):.4f}")
        return correct / (steps * batch_size), loss_sum / steps


def fit(model, optimizer, config, data, masks=None, schedule=None, log=print):
    """Train `config.epochs` with its learning-rate schedule; (history per epoch, final masks).

    After every epoch logs the running train accuracy/loss (dropout on), the validation ones and,
    when pruning, the sparsity.
    """
    if len(data["train"][1]) < config.batch_size:
        raise ValueError(f"batch_size must be <= the number of training examples "
                         f"({len(data['train'][1])}), got {config.batch_size}")
    trainer = Trainer(model, optimizer, *data["train"], masks=masks,
                      weight_decay=config.weight_decay, schedule=schedule)
    rng = np.random.default_rng(config.seed)
    logits_fn = logits_function(model)
    history = []
    for epoch in range(config.epochs):
        lr = configs.learning_rate(config, epoch)
        optimizer.learning_rate.assign(lr)
        train_acc, train_loss = trainer.train_epoch(
            config.batch_size, rng, desc=f"epoch {epoch + 1}/{config.epochs}")
        val_acc, val_loss = evaluate(logits_fn, *data["validation"])
        history.append(dict(epoch=epoch + 1, lr=lr, train_accuracy=train_acc,
                            train_loss=train_loss, val_accuracy=val_acc, val_loss=val_loss))
        line = (f"epoch {epoch + 1:2d}/{config.epochs}  lr {lr:.0e}  train acc {train_acc:.4f} "
                f"loss {train_loss:.4f}  val acc {val_acc:.4f} loss {val_loss:.4f}")
        if masks:
            history[-1]["sparsity"] = pruning_utils.sparsity(list(trainer.current_masks().values()))
            line += f"  sparsity {history[-1]['sparsity']:.1%}"
        log(line)
    return history, trainer.current_masks()
