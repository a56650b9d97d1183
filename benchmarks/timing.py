"""What the benchmarks share: a repeatable timer, the machine's facts, the results' file name."""
import datetime
import os
import platform
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from utils import memory

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def time_calls(fns, repeats=7, min_seconds=0.1, warmup=2):
    """Per-call seconds of each `fns[name]()`: median and spread (min, max) over `repeats`, and
    each repetition's (`times_s`, in order: the i-th of every variant ran side by side).

    The variants are timed round-robin (repetition 1 of every variant, then repetition 2, ...),
    so a slow spell of the machine hits all of them alike instead of one. Each repetition calls
    a variant often enough to last about `min_seconds`, so that short calls are measurable.
    """
    calls = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        start = time.perf_counter()
        fn()
        calls[name] = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    per_call = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            per_call[name].append((time.perf_counter() - start) / calls[name])
    return {name: dict(median_s=float(np.median(t)), min_s=min(t), max_s=max(t), repeats=repeats,
                       calls_per_repeat=calls[name], times_s=t) for name, t in per_call.items()}


def check_batches(batches, pixels):
    """Raise ValueError, before anything is timed, if the largest of `batches` (images of
    `pixels` float32 values, and room for the networks' activations: LeNet-5's first conv
    holds 15 values a pixel, twice) cannot fit in this machine's free memory."""
    too_big = memory.shortfall(max(batches) * pixels * 4 * 32)
    if too_big:
        raise ValueError(f"--batches {max(batches)}: a batch of {max(batches):,} images of "
                         f"{pixels} pixels {too_big}: choose smaller batches")


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each epoch, from its start to the end of its last compiled call (`seconds`),
    without fit's per-call set-up."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.seconds.append(None)

    def on_train_batch_end(self, batch, logs=None):
        self.seconds[-1] = time.perf_counter() - self.start


def device_name():
    """'gpu' when TensorFlow sees a GPU (it then places the ops there), else 'cpu'."""
    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def machine_facts():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor()) \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    gpus = tf.config.list_physical_devices("GPU")
    return dict(date=datetime.datetime.now().isoformat(timespec="seconds"), cpu=cpu,
                cores=os.cpu_count(), tensorflow=tf.__version__, python=platform.python_version(),
                device=device_name(), gpus=[tf.config.experimental.get_device_details(g).get(
                    "device_name", g.name) for g in gpus])


def results_file(name):
    """The name of results `name`'s file on this device."""
    return f"{name}-{device_name()}.json"
