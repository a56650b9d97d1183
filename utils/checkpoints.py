"""Stage artifacts on disk: one folder per stage, owned, locked and written atomically.

A checkpoint folder holds `model.keras` (architecture, weights and optimizer state),
`config.json` (the resolved config, the data's fingerprint and results) and `stage.json` (the
script that wrote it and every file it wrote); a pruned model's masks are inside `model.keras`
(`pruning.PruningMask`). Three rules keep a user's files safe:
  - a stage writes only into a folder that is missing, empty or its own earlier output (its
    `stage.json` names the stage, and the folder holds nothing that stage.json does not list); a
    user's folder, a user's file put inside a checkpoint, another stage's checkpoint, the stage's
    own input, a read-only checkpoint or a file is refused before any work;
  - a lock file beside the folder (`.<name>.lock`) lets one run at a time write it, and a run
    does not start inside a folder that another run is writing;
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
import sys
import tempfile
from pathlib import Path

import numpy as np

from utils.errors import CheckpointError

STAGE_FILE = "stage.json"


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _marker(folder):
    """`folder`/stage.json as a dict; {} if it is missing or unreadable."""
    try:
        marker = json.loads((Path(folder) / STAGE_FILE).read_text())
        return marker if isinstance(marker, dict) else {}
    except Exception:  # noqa: BLE001 - any unreadable marker means "not provably ours"
        return {}


def stage_of(folder):
    """The script named in `folder`/stage.json; None if it is missing or unreadable."""
    return _marker(folder).get("stage")


def contents(folder):
    """Every file, folder and link under `folder`, as sorted paths relative to it (links are not
    followed), stage.json left out."""
    found = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found += [str(rel / name) for name in dirs + files]
    return sorted(p for p in found if p != STAGE_FILE)


def foreign_files(folder):
    """What `folder` holds that its stage.json does not list as the stage's own output; None if
    stage.json lists nothing (written by a version before the list)."""
    written = _marker(folder).get("files")
    if not isinstance(written, list):
        return None
    return [p for p in contents(folder) if p not in set(written)]


def _read_only_part(folder):
    """The first folder under `folder` (itself included) whose entries cannot be removed."""
    for root, _, _ in os.walk(folder):
        if not os.access(root, os.W_OK | os.X_OK):
            return Path(root)
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
        foreign = foreign_files(path)
        if foreign is None:
            raise CheckpointError(f"{where}/ was written by an older version of {stage} that did "
                                  f"not list its files, so it cannot tell yours from its own: "
                                  f"check that nothing of yours is in it, delete it and rerun")
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                              else "")
            raise CheckpointError(f"{where}/ is {stage}'s earlier output but also holds what it "
                                  f"did not write ({shown}): refusing to replace it; move those "
                                  f"out or choose another {flag}")
        read_only = _read_only_part(path)
        if read_only:
            raise CheckpointError(f"{where}/ is read-only ({read_only}): cannot replace it; make "
                                  f"it writable (chmod -R u+w {path}) or choose another {flag}")
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

    Raises CheckpointError at once if another run holds it, or holds the lock of a folder that
    `path` lies in (a run writing `new` replaces all of `new/` when it ends, so a run writing
    `new/sub` meanwhile would lose its work or make the first one fail). The lock is released
    when the process ends, however it ends; the small lock file stays.
    """
    path = Path(path).resolve()
    lock_path = path.with_name(f".{path.name}.lock")
    _check_no_writer_above(path, flag)
    made = [p for p in path.parents if not p.exists()]
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
        # Again after taking the lock and creating the parents: a run that locked a parent in
        # between finds that parent not empty, so one of the two is always refused.
        try:
            _check_no_writer_above(path, flag)
        except CheckpointError:
            lock_path.unlink(missing_ok=True)
            for folder in made:  # innermost first; rmdir leaves anything that is not empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        yield
    finally:
        os.close(fd)


def _check_no_writer_above(path, flag):
    for parent in path.parents[:-1]:  # the root has no name, so no lock
        if _locked(parent.with_name(f".{parent.name}.lock")):
            raise CheckpointError(f"another run is writing {parent}, which {flag} {path} lies "
                                  f"in: wait for it to finish or choose a folder outside it")


def _locked(lock_path):
    """Whether another process holds the lock file `lock_path` (False if there is none)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def stage_output(path, stage, flag="--model-dir", inputs=None):
    """Yield a new temporary folder that replaces output folder `path` if the block succeeds.

    Before the caller does any work, `path` is checked (`check_output_dir`), locked, and the
    temporary folder is created beside it (so an unwritable or invalid path fails in seconds).
    On any exception the temporary folder is removed and `path` is left as it was. If a user's
    file appeared in `path` while the block ran, the finished output is kept beside it under a
    new name (`<name>-1`, ...) and the error says where.
    """
    path = Path(path).resolve()
    check_output_dir(path, stage, flag, inputs)
    with lock(path, flag):
        check_output_dir(path, stage, flag, inputs)  # another run may have written it meanwhile
        _remove_leftovers(path, stage)
        tmp = None
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make the checkpoint private
            write_json(tmp / STAGE_FILE, {"stage": stage})
        except OSError as e:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"{flag} {path}: cannot write in {path.parent} "
                                  f"({e.strerror or e})") from None
        try:
            yield tmp
            write_json(tmp / STAGE_FILE, {"stage": stage, "files": contents(tmp)})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            check_output_dir(path, stage, flag, inputs)  # nothing of a user's appeared meanwhile
        except CheckpointError as e:
            kept = _free_name(path)
            os.rename(tmp, kept)
            raise CheckpointError(f"{e}; this run's output is kept in {kept}/") from None
        _replace(path, tmp)


def _free_name(path):
    """`path` with the first suffix -1, -2, ... that names nothing yet."""
    n = 1
    while path.with_name(f"{path.name}-{n}").exists():
        n += 1
    return path.with_name(f"{path.name}-{n}")


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
    try:
        if stage_of(old):
            shutil.rmtree(old)
        else:
            old.rmdir()  # it was empty when checked; rmdir refuses if that changed
    except OSError as e:  # checked writable before the work; the new output is in place anyway
        print(f"warning: {path}/ is replaced, but its previous version could not be removed "
              f"({e.strerror or e}): it is in {old}/", file=sys.stderr)


def _remove_leftovers(path, stage):
    """Remove temporary folders of this stage left by a killed run (they carry its stage.json).

    Only while `path` exists: if a run died between its two renames, its leftovers hold the
    only copies and are kept. A working folder that holds nothing but an empty or unreadable
    stage.json (a run killed while creating it) is removed too.
    """
    if not path.exists():
        return
    for kind in ("tmp", "old"):
        for leftover in path.parent.glob(f".{path.name}.{kind}-*"):
            if not leftover.is_dir() or leftover.is_symlink():
                continue
            half_made = (kind == "tmp" and (leftover / STAGE_FILE).is_file()
                         and not _marker(leftover) and not contents(leftover))
            if stage_of(leftover) == stage or half_made:
                shutil.rmtree(leftover, ignore_errors=True)


def read_record(folder, made_by):
    """(the bytes, the content) of the record `folder`/config.json that `made_by` wrote: one
    CheckpointError saying what to rerun if the folder is another stage's, or the record is
    missing, damaged or not a stage's (no {"config": {...}})."""
    path = Path(folder) / "config.json"
    raw = read_artifact(path, lambda p: p.read_bytes(), made_by)
    content = read_artifact(path, lambda p: json.loads(raw), made_by)
    if not (isinstance(content, dict) and isinstance(content.get("config"), dict)):
        raise CheckpointError(f"{path} is not a record of {made_by} (no \"config\"): rerun "
                              f"{made_by}")
    if stage_of(folder) not in (made_by, None):
        raise CheckpointError(f"{folder}/ holds a checkpoint of {stage_of(folder)}, not of "
                              f"{made_by}: rerun {made_by} or pass its folder")
    return raw, content


def record_facts(record):
    """What a stage's record says it ran on: {network, seed, quick, data_source, data_sha256};
    older deploy records kept the network in "pruned" and the data in "data", and older records
    of every stage have no "quick" (none was a --quick run the readers would now take)."""
    config, pruned, data = record["config"], record.get("pruned") or {}, record.get("data") or {}
    return dict(network=config.get("network", pruned.get("network")), seed=config.get("seed"),
                quick=config.get("quick", False),
                data_source=config.get("data_source", data.get("source")),
                data_sha256=config.get("data_sha256", data.get("sha256")))


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
