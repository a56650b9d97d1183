"""Training a Keras classifier with plain `model.fit`, under the `pruning` package's masks.

What keeps `fit`'s overhead down (benchmarks/bench_training.py times it against a hand-written
loop, which is still faster: see the README): the data stay in memory as constants and each batch
is one gather of shuffled indices (not one op per example), steps are XLA-compiled, 50 of them per
compiled call, and tf.data's autotuning is off: with it, on this 2-core machine a fit call
sometimes ended with a ~1 s stall (measured).
Weight decay is a `kernel_regularizer` of the network, so the reported loss includes its penalty.
"""
import json
import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import configs
from networks.builders import architecture, build_network
from pruning import get_masks, sparsity, variational_masks
from utils import memory
from utils.errors import CheckpointError
from utils.files import replacing

STEPS_PER_EXECUTION = 50  # training steps per compiled call; the progress bar moves once per call


def check_shift(config):
    """Raise ValueError, before any training, unless `config.shift` leaves part of each image
    in place: a shift as large as a side would move whole images out (Keras' RandomTranslation
    refuses it too, but only once training starts, and in its own terms)."""
    if config.shift >= min(config.image_shape):
        raise ValueError(f"--shift {config.shift}: the images are "
                         f"{'x'.join(map(str, config.image_shape))} pixels; a shift must be "
                         f"smaller than both sides (at most {min(config.image_shape) - 1})")


def dataset(x, y, batch_size, seed, shift=0, image_shape=None, targets=None):
    """Shuffled (x, y) batches of in-memory arrays, reshuffled every epoch, remainder dropped.

    `shift` > 0: each image (flattened, of `image_shape` H x W) moved by a random whole number
    of pixels, -shift to +shift each way, drawn afresh for every image of every epoch, the
    uncovered border black (Keras' RandomTranslation, nearest pixel). `targets(images, labels)`:
    what each batch trains toward instead of its labels (`soft_targets`), from the images as
    moved."""
    x, y = tf.constant(x), tf.constant(y)
    if shift:
        height, width = image_shape
        move = keras.layers.RandomTranslation(shift / height, shift / width, seed=seed,
                                              fill_mode="constant", interpolation="nearest")

    def batch(i):
        images = tf.gather(x, i)
        if shift:
            images = move(tf.reshape(images, (-1, height, width, 1)), training=True)
            images = tf.reshape(images, (-1, height * width))
        labels = tf.gather(y, i)
        return images, labels if targets is None else targets(images, labels)

    options = tf.data.Options()
    options.autotune.enabled = False
    return (tf.data.Dataset.range(len(y)).shuffle(len(y), seed=seed)
            .batch(batch_size, drop_remainder=True).map(batch).with_options(options))


def soft_targets(teacher, weight, classes):
    """`targets` for `dataset`: each image's one-hot label mixed with the probabilities that the
    model `teacher` (logits out) gives it, `weight` of the teacher's (Hinton et al. 2015's
    distillation at temperature 1: cross-entropy is linear in its target, so training toward the
    mixture is the weighted sum of the two losses)."""
    def targets(images, labels):
        taught = tf.nn.softmax(teacher(images, training=False))
        return weight * taught + (1 - weight) * tf.one_hot(labels, classes, dtype=taught.dtype)
    return targets


# float32 copies of every parameter while training: the weights, their gradients, SGD momentum,
# and the loss's and XLA's temporaries; an estimate for refusing what cannot fit, not a budget.
TRAINING_COPIES = 6


def check_memory(parameters, data, network):
    """Raise ValueError, before anything is built, if training `parameters` on `data` cannot
    fit in this machine's free memory (the data are held twice: as arrays and as TF constants)."""
    data_bytes = sum(data[split][0].nbytes + data[split][1].nbytes
                     for split in ("train", "validation", "test"))
    too_big = memory.shortfall(4 * TRAINING_COPIES * parameters + 2 * data_bytes)
    if too_big:
        raise ValueError(f"training {network} ({parameters:,} parameters for "
                         f"{'x'.join(map(str, data['image_shape']))} images and "
                         f"{data['num_classes']} classes) on {len(data['train'][1]):,} images of "
                         f"{data['source']} {too_big}: use smaller images or fewer classes")


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: the run stops and saves nothing."""


def check_finite(loss, where, data):
    """Raise TrainingDiverged unless `loss` is finite; `data` (the splits) for the hint.

    Why not keras.callbacks.TerminateOnNaN: it ends `fit` quietly, and the stage would then save
    the NaN model and exit 0.
    """
    if not math.isfinite(loss):
        x = data["train"][0]
        raise TrainingDiverged(
            f"the loss became {loss} {where}: training diverged, nothing is saved; the training "
            f"pixels of {data.get('source', 'the data')} range from {np.min(x):.3g} to "
            f"{np.max(x):.3g} (scale them to [0, 1]), or lower the learning rate")


class StopOnNonFinite(keras.callbacks.Callback):
    """Raise TrainingDiverged as soon as the training or validation loss is not finite."""

    def __init__(self, data):
        super().__init__()
        self.data, self.epoch = data, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        check_finite(float(logs["loss"]), f"in epoch {self.epoch}, step {batch + 1}", self.data)

    def on_epoch_end(self, epoch, logs=None):
        check_finite(float(logs["val_loss"]), f"on the validation split after epoch {epoch + 1}",
                     self.data)


class EpochLog(keras.callbacks.Callback):
    """A progress bar per epoch (on a terminal only), then one line and one history entry.

    With a `backup_dir` (`fit`'s), the history is kept there too, so that a resumed run's
    history holds every epoch: the first resumed one says "resumed"."""

    def __init__(self, epochs, steps, log, backup_dir=None):
        super().__init__()
        self.epochs, self.steps, self.log, self.history = epochs, steps, log, []
        self.saved = backup_dir and Path(backup_dir) / "history.json"
        if self.saved and self.saved.is_file():  # written whole (`replacing`) by a run before
            self.history = json.loads(self.saved.read_text())
        self.first = None  # "resumed" on the first epoch's entry if it follows a backup's

    def on_train_begin(self, logs=None):
        self.first = None

    def on_train_end(self, logs=None):
        if self.first is None and self.history:  # no epoch left: resumed after the last one
            self.log(f"resumed after epoch {self.history[-1]['epoch']} of {self.epochs}, the "
                     f"last, from the backup of an interrupted run ({self.saved.parent}/)")

    def on_epoch_begin(self, epoch, logs=None):
        if self.first is None:  # the first epoch of this fit: after a backup's last one?
            self.first = "resumed" if epoch > 0 else "started"
            self.history = [h for h in self.history if h["epoch"] <= epoch]
            if epoch > 0:
                self.log(f"resuming after epoch {epoch} of {self.epochs} from the backup of an "
                         f"interrupted run ({self.saved.parent}/); the data's order from here "
                         f"differs from an uninterrupted run's")
        # disable=None: a bar only on a terminal; a log file gets the one line per epoch instead
        self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                        leave=False, disable=None)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(batch + 1 - self.bar.n)
        self.bar.set_postfix(loss=f"{logs['loss']:.4f}")

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()
        entry = dict(epoch=epoch + 1, lr=float(self.model.optimizer.learning_rate.numpy()),
                     train_accuracy=logs["accuracy"], train_loss=logs["loss"],
                     val_accuracy=logs["val_accuracy"], val_loss=logs["val_loss"])
        line = (f"epoch {epoch + 1:2d}/{self.epochs}  lr {entry['lr']:.0e}  train acc "
                f"{entry['train_accuracy']:.4f} loss {entry['train_loss']:.4f}  val acc "
                f"{entry['val_accuracy']:.4f} loss {entry['val_loss']:.4f}")
        masks = variational_masks(self.model) or get_masks(self.model)
        if masks:
            entry["sparsity"] = sparsity(list(masks.values()))
            line += f"  sparsity {entry['sparsity']:.1%}"
        entry = {k: float(v) if k != "epoch" else v for k, v in entry.items()}
        if self.first == "resumed":
            entry["resumed"] = True
        self.first = "done"
        self.history.append(entry)
        if self.saved:
            with replacing(self.saved) as tmp:
                tmp.write_text(json.dumps(self.history))
        self.log(line)


class Restore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, whose failure to read a backup back is one line naming it."""

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except Exception as e:  # noqa: BLE001 - h5py, JSON, Keras: whatever the damage raises
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise CheckpointError(f"{self.backup_dir}/ could not be read back ({reason}): it is "
                                  f"removed; rerun to start afresh") from None


def train_dense(config, data, log=print, backup_dir=None):
    """Stage 1's work: the network `config` describes, built and trained from `config.seed` on
    `data` with SGD; (model, optimizer, history). It depends on nothing but `config` and `data`,
    so the config a checkpoint records reruns it to the same weights (tests/scripts);
    `backup_dir`: `fit`'s."""
    keras.utils.set_random_seed(config.seed)
    model = build_network(config)
    optimizer = keras.optimizers.SGD(configs.learning_rate(config, 0), momentum=config.momentum)
    log(f"training {config.network} {architecture(model)} ({model.count_params():,} "
        f"parameters) on {len(data['train'][1]):,} images for {config.epochs} epochs")
    return model, optimizer, fit(model, optimizer, config, data, log=log, backup_dir=backup_dir)


def compile_for_training(model, optimizer, soft=False):
    """`model.compile` as the stages train: logits and integer labels (`soft`: probabilities
    per class), XLA, 50 steps a call."""
    loss, accuracy = ((keras.losses.CategoricalCrossentropy, keras.metrics.CategoricalAccuracy)
                      if soft else (keras.losses.SparseCategoricalCrossentropy,
                                    keras.metrics.SparseCategoricalAccuracy))
    model.compile(optimizer, loss(from_logits=True), metrics=[accuracy(name="accuracy")],
                  jit_compile=True, steps_per_execution=STEPS_PER_EXECUTION)


def fit(model, optimizer, config, data, callbacks=(), learning_rate=None, log=print,
        backup_dir=None, teacher=None):
    """Compile `model` and train it `config.epochs` with `model.fit`; the history per epoch.

    `learning_rate(epoch)` defaults to the config's piecewise-constant schedule. Pruned layers
    stay pruned (their masks are kernel constraints); `callbacks` may prune further. Logs the
    running train accuracy/loss (dropout on), the validation ones and, if pruned, the sparsity.
    A loss that becomes NaN or infinite raises TrainingDiverged at once. `backup_dir`: a folder
    (`utils.files.backup`) where Keras' BackupAndRestore keeps the weights and optimizer state
    of the last finished epoch, and the history; a fit that finds them there resumes after that
    epoch (its callbacks' state follows from the epoch and `optimizer.iterations`).
    `teacher`: a model whose predictions are `config.distill` of each training target
    (`soft_targets`); the running train accuracy is then agreement with the targets' argmax,
    the validation one is against the labels.
    """
    x, y = data["train"]
    if len(y) < config.batch_size:
        raise ValueError(f"batch_size must be <= the number of training examples "
                         f"({len(y)}), got {config.batch_size}")
    targets, validation = None, data["validation"]
    if teacher is not None:
        targets = soft_targets(teacher, config.distill, data["num_classes"])
        validation = (validation[0], keras.utils.to_categorical(validation[1],
                                                                data["num_classes"]))
    compile_for_training(model, optimizer, soft=teacher is not None)
    epoch_log = EpochLog(config.epochs, len(y) // config.batch_size, log, backup_dir)
    schedule = learning_rate or (lambda epoch: configs.learning_rate(config, epoch))
    # The backup restores the state before any other callback reads it (GradualPruning: the
    # optimizer's iterations), and saves it after the epoch log has saved the history, so that
    # the history is never behind the weights; double: a backup damaged as it was written
    # falls back to the one before.
    restore = [Restore(str(backup_dir), double_checkpoint=True,
                       delete_checkpoint=False)] if backup_dir else []
    batches = dataset(x, y, config.batch_size, config.seed, config.shift, config.image_shape,
                      targets)
    model.fit(batches, epochs=config.epochs, verbose=0, shuffle=False,  # shuffled by `dataset`
              validation_data=validation, validation_batch_size=5000,
              callbacks=[epoch_log, *restore, keras.callbacks.LearningRateScheduler(schedule),
                         *callbacks, StopOnNonFinite(data)])
    return epoch_log.history
