"""Stage artifacts on disk: a directory per stage, written atomically.

A checkpoint directory holds `model.keras` (architecture, weights and optimizer state),
`config.json` (the resolved config and results) and, after pruning, `masks.npz`.
Everything is first written to `<dir>.tmp` and then renamed into place, so an interrupted run
leaves the previous checkpoint (or none), never a half-written one.
"""
import contextlib
import dataclasses
import json
import shutil
from pathlib import Path

import keras
import numpy as np


class CheckpointError(Exception):
    """A stage's input artifact is missing or unreadable; the message says what to run."""


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a temporary directory that replaces `path` only if the block finishes."""
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_checkpoint(model_dir, model, optimizer, config, results=None, masks=None):
    """Write model + optimizer state, the config and results, and the masks if any."""
    model.compile(optimizer=optimizer)  # so model.keras carries the optimizer's momentum
    with atomic_directory(model_dir) as tmp:
        model.save(tmp / "model.keras")
        write_json(tmp / "config.json", {"config": config, "results": results or {}})
        if masks is not None:
            np.savez(tmp / "masks.npz", **masks)


def load_checkpoint(model_dir, made_by):
    """(model with its optimizer, masks or None, config.json dict) from a checkpoint directory.

    `made_by` names the script that writes this checkpoint, for the error message.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "model.keras").is_file():
        raise CheckpointError(f"no checkpoint in {model_dir}/: run {made_by} first")
    try:
        model = keras.models.load_model(model_dir / "model.keras")
        meta = json.loads((model_dir / "config.json").read_text())
        masks = None
        if (model_dir / "masks.npz").is_file():
            with np.load(model_dir / "masks.npz") as f:
                masks = {name: f[name] for name in f.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read the checkpoint in {model_dir}/ ({e}): "
                              f"rerun {made_by}") from None
    return model, masks, meta
