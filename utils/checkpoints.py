"""Stage artifacts on disk: one folder per stage, owned, locked and written atomically.

A checkpoint folder holds `model.keras` (architecture, weights and optimizer state),
`config.json` (the resolved config and results) and `stage.json` (the script that wrote it); a
pruned model's masks are inside `model.keras` (`pruning.PruningMask`). Three rules keep a user's
files safe:
  - a stage writes only into a folder that is missing, empty or its own earlier output (its
    `stage.json` names the stage); a user's folder, another stage's checkpoint, the stage's own
    input or a file is refused before any work;
  - a lock file beside the folder (`.<name>.lock`) lets one run at a time write it;
  - everything is written into a fresh temporary folder beside it (`.<name>.tmp-*`), created
    before the work so that an unwritable path fails at once, and renamed into place only when
    the stage succeeds; an interrupted or failed run leaves the previous folder as it was.
"""
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np

import pruning  # noqa: F401  (registers PruningMask, so that load_model can read pruned models)

STAGE_FILE = "stage.json"


class CheckpointError(Exception):
    """A stage's input or output folder cannot be used; the message says what to do."""


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def stage_of(folder):
    """The script named in `folder`/stage.json; None if it is missing or unreadable."""
    try:
        return json.loads((Path(folder) / STAGE_FILE).read_text())["stage"]
    except Exception:  # noqa: BLE001 - any unreadable marker means "not provably ours"
        return None


def check_output_dir(path, stage, flag="--model-dir", inputs=None):
    """Raise CheckpointError unless `stage` may replace `path`.

    Allowed: a missing folder, an empty one, or one whose stage.json names `stage`. Refused: a
    file, a folder with anything else in it, a folder inside another checkpoint, and a folder
    that is, holds or lies inside one of `inputs` ({flag: path} of the stage's inputs).
    """
    path = Path(path).resolve()
    where = f"{flag} {path}"
    for input_flag, input_path in (inputs or {}).items():
        input_path = Path(input_path).resolve()
        if path == input_path or input_path in path.parents or path in input_path.parents:
            relation = "is" if path == input_path else "overlaps"
            raise CheckpointError(f"{where} {relation} this stage's input ({input_flag} "
                                  f"{input_path}): refusing to overwrite it")
    if not path.name:
        raise CheckpointError(f"{where} is a file-system root: choose a folder to write into")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise CheckpointError(f"{where}: {parent} is a file, not a folder")
        if (parent / STAGE_FILE).is_file():
            raise CheckpointError(f"{where} lies inside the checkpoint {parent}/: choose a "
                                  f"folder outside it")
    if not path.exists():
        return
    if not path.is_dir():
        raise CheckpointError(f"{where} is a file, not a folder: refusing to replace it")
    owner = stage_of(path)
    if owner == stage:
        return
    if owner:
        raise CheckpointError(f"{where}/ holds a checkpoint of {owner}: refusing to replace it "
                              f"with the output of {stage}; choose another {flag}")
    if any(path.iterdir()):
        raise CheckpointError(f"{where}/ is not empty and was not written by {stage} (no "
                              f"{STAGE_FILE}): refusing to replace it; choose a new or empty "
                              f"folder")


@contextlib.contextmanager
def lock(path, flag="--model-dir"):
    """Hold the lock of output `path` (the file `.<name>.lock` beside it) for the block.

    Raises CheckpointError at once if another run holds it. The lock is released when the
    process ends, however it ends; the small lock file stays.
    """
    path = Path(path).resolve()
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CheckpointError(f"{flag} {path}: cannot write in {path.parent} "
                              f"({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointError(f"another run is writing {path} (it holds {lock_path}): wait "
                                  f"for it to finish") from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def stage_output(path, stage, flag="--model-dir", inputs=None):
    """Yield a new temporary folder that replaces output folder `path` if the block succeeds.

    Before the caller does any work, `path` is checked (`check_output_dir`), locked, and the
    temporary folder is created beside it (so an unwritable or invalid path fails in seconds).
    On any exception the temporary folder is removed and `path` is left as it was.
    """
    path = Path(path).resolve()
    check_output_dir(path, stage, flag, inputs)
    with lock(path, flag):
        check_output_dir(path, stage, flag, inputs)  # another run may have written it meanwhile
        _remove_leftovers(path, stage)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make the checkpoint private
            write_json(tmp / STAGE_FILE, {"stage": stage})
        except OSError as e:
            raise CheckpointError(f"{flag} {path}: cannot write in {path.parent} "
                                  f"({e.strerror or e})") from None
        try:
            yield tmp
            check_output_dir(path, stage, flag, inputs)  # nothing of a user's appeared meanwhile
            _replace(path, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace(path, tmp):
    """Rename `tmp` to `path`, removing the previous `path` (this stage's, or an empty folder)."""
    if not path.exists():
        os.rename(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.rename(path, old)  # onto the empty folder just made: a name no one else uses
    os.rename(tmp, path)
    if stage_of(old):
        shutil.rmtree(old)
    else:
        old.rmdir()  # it was empty when checked; rmdir refuses if that changed


def _remove_leftovers(path, stage):
    """Remove temporary folders of this stage left by a killed run (they carry its stage.json).

    Only while `path` exists: if a run died between its two renames, its leftovers hold the
    only copies and are kept.
    """
    if not path.exists():
        return
    for kind in ("tmp", "old"):
        for leftover in path.parent.glob(f".{path.name}.{kind}-*"):
            if leftover.is_dir() and stage_of(leftover) == stage:
                shutil.rmtree(leftover, ignore_errors=True)


def save_checkpoint(out, model, optimizer, config, results=None):
    """Write model (masks included) + optimizer state, the config and results into `out` (the
    temporary folder of `stage_output`)."""
    out = Path(out)
    model.compile(optimizer=optimizer)  # so model.keras carries the optimizer's momentum
    model.save(out / "model.keras")
    write_json(out / "config.json", {"config": config, "results": results or {}})


def read_artifact(path, reader, made_by):
    """`reader(path)`; any failure becomes one CheckpointError naming the file and what to rerun.

    Why catch everything: a damaged file fails deep inside Keras, zipfile, h5py or NumPy with
    exceptions of many types (BadZipFile, OSError, KeyError, ...), none of which says what to do.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} is missing: rerun {made_by}")
    try:
        return reader(path)
    except Exception as e:  # noqa: BLE001
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{path} is damaged or unreadable ({reason}): rerun "
                              f"{made_by}") from None


def load_checkpoint(model_dir, made_by):
    """(model with its optimizer and any pruning masks, config.json dict) from a checkpoint folder.

    `made_by` is the script that writes the checkpoint this caller needs: a missing checkpoint,
    one of another stage and a damaged file are each one CheckpointError saying what to run.
    """
    model_dir = Path(model_dir)
    if not any((model_dir / name).exists() for name in (STAGE_FILE, "model.keras")):
        raise CheckpointError(f"no checkpoint in {model_dir}/: run {made_by} first")
    stage = read_artifact(model_dir / STAGE_FILE, lambda p: json.loads(p.read_text())["stage"],
                          made_by)
    if stage != made_by:
        raise CheckpointError(f"{model_dir}/ holds a checkpoint of {stage}, not the one of "
                              f"{made_by} needed here: run {made_by} first or pass its folder")
    meta = read_artifact(model_dir / "config.json", lambda p: json.loads(p.read_text()), made_by)
    model = read_artifact(model_dir / "model.keras", keras.models.load_model, made_by)
    return model, meta
