"""Tiny networks and data shared by the tests, and a script run in this process."""
import gzip
import runpy
import signal

import keras
import numpy as np
import pytest

import configs
from datasets.images import fingerprint
from networks.builders import build_network
from tests.conftest import REPO
from training.checkpoints import save_checkpoint
from utils.files import stage_output

TINY = configs.DenseConfig(image_shape=(4, 5), hidden_sizes=(16, 8), num_classes=3, batch_size=10,
                           epochs=2, init_stddev=0.3)


def tiny_data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, TINY.input_size)).astype(np.float32)
    y = (x[:, 0] * 3).astype(np.int32) % 3
    return {"train": (x, y), "validation": (x[:20], y[:20]), "test": (x[:20], y[:20]),
            "image_shape": TINY.image_shape, "num_classes": TINY.num_classes,
            "source": f"tiny seed {seed}", "sha256": fingerprint(x, y)}


def tiny_model(config=TINY):
    keras.utils.set_random_seed(0)
    model = build_network(config)
    optimizer = keras.optimizers.SGD(0.1, momentum=config.momentum)
    return model, optimizer


def write_checkpoint(path, stage, model, optimizer):
    """Save a checkpoint folder of `model` as script `stage` would."""
    with stage_output(path, stage) as out:
        save_checkpoint(out, model, optimizer, TINY, results={"acc": 0.5})


# A LeNet-5-shaped network on 16x16 images (the smallest it takes): two 5x5 convs with 2x2
# pooling, then 12-4.
TINY_CONV = configs.override(configs.dense_config("lenet-5"), image_shape=(16, 16), num_classes=4,
                             conv_filters=(3, 4), hidden_sizes=(12,), batch_size=10, epochs=1)


def tiny_conv_data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 256)).astype(np.float32)
    y = (x[:, :128].sum(1) > x[:, 128:].sum(1)).astype(np.int32) + 2 * (x[:, 0] > 0.5)
    return {"train": (x, y), "validation": (x[:20], y[:20]), "test": (x[:20], y[:20]),
            "image_shape": (16, 16), "num_classes": 4, "source": f"tiny conv seed {seed}",
            "sha256": fingerprint(x, y)}


def run_script(script, *args, monkeypatch, cwd=None):
    """Run `script` (a path in the repo) with `args` in this process, in folder `cwd`; its exit
    code: 0, 2 for a bad flag, or the "error: ..." line of `cli.run`. Faster than a subprocess
    (no second TensorFlow import) for runs that stop early; the signal handlers `cli.run`
    installs are put back."""
    monkeypatch.setattr("sys.argv", [script, *args])
    if cwd:
        monkeypatch.chdir(cwd)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(REPO / script), run_name="__main__")
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    return exit_.value.code


def write_idx(path, array, magic_dims=None):
    """Write `array` as an IDX file (gzip-compressed if `path` ends in .gz); the path."""
    ndim = magic_dims or array.ndim
    header = (0x800 + ndim).to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path
