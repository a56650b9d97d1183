"""How this project writes files: never half a file, never two writers at once, never over what
it did not write. One module, used by every stage, the sweep, the comparison, the benchmarks, the
data downloads and the plots (docs/when-things-go-wrong.md states the guarantees).

- **Atomic.** A file is written under a temporary name beside it and renamed into place
  (`replacing`); a stage's checkpoint folder is written as a temporary folder beside it and
  renamed into place when the stage succeeds (`stage_output`).
- **Locked.** A writer holds `.<name>.lock` beside what it writes (`lock`, `flock`: released when
  the process ends, however it ends): a second run is refused at once, or, in a folder that many
  runs write in turn, waits.
- **Owned.** A folder this project writes in records what it wrote there, and only that is ever
  replaced or removed. Two kinds of folder, one rule (`foreign`):
    - a stage's checkpoint folder is the stage's as a whole: its `stage.json` names the stage and
      lists every file; anything else in it is the user's, and the stage refuses to replace it;
    - a shared folder (pics/, results/, any --pics-dir or --results-dir) holds files of many
      runs beside a user's: its `.written-by-pruning.json` holds the SHA-256 of each file this
      project wrote, so a file of the user's under the same name, or one of ours edited since, is
      refused (`published` writes into one).
"""
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from utils.errors import CheckpointError

STAGE_FILE = "stage.json"  # a checkpoint folder's record: {"stage": script, "files": [...]}
MANIFEST = ".written-by-pruning.json"  # a shared folder's record: {name: SHA-256}
PUBLISHING = "written-by-pruning.json"  # its lock: .written-by-pruning.json.lock, as before
# What a training backup holds: its marker, the history, Keras' BackupAndRestore's files.
BACKUP_FILES = {"backup.json", ".backup.json.tmp.json", "history.json", ".history.json.tmp.json",
                "latest.weights.h5", "latest.weights.h5.bkp", "training_metadata.json",
                "training_metadata.json.bkp"}


def _unnamed(error):
    """What went wrong, if `error` is an OSError that names no file (a write's "[Errno 28] No
    space left on device", "[Errno 5] Input/output error", a file too large): the caller says
    where. None for any other error."""
    if not isinstance(error, OSError) or error.filename:
        return None
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"out of disk space ({error.strerror})"
    return error.strerror or str(error) or type(error).__name__


# Atomic writes

@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path beside `path` to write; it replaces `path` if the block succeeds
    and is removed if it fails. The temporary name keeps the suffix, which np.savez and
    Matplotlib's savefig read to choose the format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# Locks

@contextlib.contextmanager
def lock(path, flag="--model-dir", shared=False):
    """Hold the lock of output `path` (the file `.<name>.lock` beside it) for the block.

    Raises CheckpointError at once if another run holds it, or holds the lock of a folder that
    `path` lies in (a run writing `new` replaces all of `new/` when it ends, so a run writing
    `new/sub` meanwhile would lose its work or make the first one fail). `shared`: the lock of a
    folder's record that runs update in turn (`publish`): wait for it, and leave the folders
    above to their own writers' locks, which may be the caller's. The lock is released when the
    process ends, however it ends; the small lock file stays, unless the block wrote nothing
    into the folders the lock had to make (a refused or failed run): they go too.
    """
    path = Path(path).parent.resolve() / Path(path).name  # a link's own lock, not its target's
    lock_path = _lock_file(path)
    if not shared:
        _check_no_writer_above(path, flag)
    made = [p for p in path.parents if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{flag} {path}: cannot write in {path.parent} "
                              f"({e.strerror or e})") from None
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CheckpointError(f"{flag} {path}: cannot open its lock {lock_path} "
                              f"({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if shared else fcntl.LOCK_NB))
        except BlockingIOError:
            raise CheckpointError(f"another run is writing {path} (it holds {lock_path}): wait "
                                  f"for it to finish") from None
        # Again after taking the lock and creating the parents: a run that locked a parent in
        # between finds that parent not empty, so one of the two is always refused.
        if not shared:
            _check_no_writer_above(path, flag)
        yield
    finally:
        if made and os.listdir(path.parent) == [lock_path.name]:  # made for a run that wrote
            lock_path.unlink(missing_ok=True)  # nothing (refused, failed): left as it was
            for folder in made:  # innermost first; rmdir leaves anything that is not empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
        os.close(fd)


def _lock_file(path):
    """The lock file of `path`: `.<name>.lock` beside it."""
    return path.with_name(f".{path.name}.lock")


def _check_no_writer_above(path, flag):
    for parent in path.parents[:-1]:  # the root has no name, so no lock
        if _locked(_lock_file(parent)):
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


# Ownership: what this project wrote in a folder

def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def foreign(folder, written, names):
    """Those of `names` (paths relative to `folder`) that `folder` holds but that the record
    `written` does not vouch for: not listed in it, or listed with a SHA-256 the file no longer
    has (None: listed as a whole stage's, whatever its content)."""
    folder = Path(folder)

    def ours(name):
        if name not in written:
            return False
        return written[name] is None or ((folder / name).is_file()
                                         and _sha256(folder / name) == written[name])
    return [n for n in names if os.path.lexists(folder / n) and not ours(n)]


def _read_json(path):
    """The JSON object in `path`; {} if it is missing, unreadable or not an object: then nothing
    is provably this project's."""
    try:
        content = json.loads(Path(path).read_text())
        return content if isinstance(content, dict) else {}
    except Exception:  # noqa: BLE001 - any unreadable record means "not provably ours"
        return {}


# A stage's checkpoint folder

def stage_of(folder):
    """The script named in `folder`/stage.json; None if it is missing or unreadable."""
    return _read_json(Path(folder) / STAGE_FILE).get("stage")


def contents(folder):
    """Every file, folder and link under `folder`, as sorted paths relative to it (links are not
    followed), stage.json left out."""
    found = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found += [str(rel / name) for name in dirs + files]
    return sorted(p for p in found if p != STAGE_FILE)


def foreign_files(folder):
    """What checkpoint `folder` holds that its stage.json does not list as the stage's own
    output; None if stage.json lists nothing (written by a version before the list)."""
    written = _read_json(Path(folder) / STAGE_FILE).get("files")
    if not isinstance(written, list):
        return None
    return foreign(folder, dict.fromkeys(p for p in written if isinstance(p, str)),
                   contents(folder))


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
        found = foreign_files(path)
        if found is None:
            raise CheckpointError(f"{where}/ was written by an older version of {stage} that did "
                                  f"not list its files, so it cannot tell yours from its own: "
                                  f"check that nothing of yours is in it, delete it and rerun")
        if found:
            shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5
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
        tmp = _unused_name(path, "tmp")
        try:  # the name is known before the folder is made: an interrupt at any moment removes it
            try:
                os.mkdir(tmp)  # (mkdtemp returns the name once made, and makes it private)
                write_json(tmp / STAGE_FILE, {"stage": stage})
            except OSError as e:
                raise CheckpointError(f"{flag} {path}: cannot write in {path.parent} "
                                      f"({e.strerror or e})") from None
            yield tmp
            write_json(tmp / STAGE_FILE, {"stage": stage, "files": contents(tmp)})
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            failure = _unnamed(e)
            if failure:  # say where
                raise CheckpointError(f"{flag} {path}: {failure} writing into {path.parent}: "
                                      f"the previous output, if any, is left as it was") from None
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


def _unused_name(path, kind):
    """`.<name>.<kind>-<random>` beside `path`, naming nothing yet. Under `path`'s lock no other
    run of this project makes one meanwhile."""
    while True:
        name = path.with_name(f".{path.name}.{kind}-{secrets.token_hex(4)}")
        if not os.path.lexists(name):
            return name


def _replace(path, tmp):
    """Rename `tmp` to `path`, removing the previous `path` (this stage's, or an empty folder)."""
    if not path.exists():
        os.rename(tmp, path)
        return
    old = _unused_name(path, "old")
    os.rename(path, old)
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
                         and not _read_json(leftover / STAGE_FILE) and not contents(leftover))
            if stage_of(leftover) == stage or half_made:
                shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def backup(path, stage, config):
    """Yield `.<name>.backup/` beside output folder `path`: where a stage's training keeps its
    state every epoch (keras.callbacks.BackupAndRestore, training/fit.py), so that a run that
    was interrupted resumes when it is run again with the same `config`.

    The folder is this project's (its backup.json names the stage and the config's SHA-256).
    A backup of other settings is refused in one line, before any training: hours of it are
    not thrown away by a mistyped flag; a folder of the user's under that name is refused too,
    and one that holds only this project's files but no readable backup.json (a run killed as it
    made it) is removed. It is kept when the block is interrupted (Ctrl-C, SIGTERM) or fails
    unexpectedly, and removed when the block ends otherwise: successfully, or with an error that
    a rerun would meet again (ValueError: the training diverged, a setting; CheckpointError: the
    backup could not be read). Call it inside `stage_output`, whose lock makes the run its only
    writer, around the work up to the checkpoint's last file.
    """
    path = Path(path).resolve()
    folder = path.with_name(f".{path.name}.backup")
    marker = {"stage": stage, "config_sha256": hashlib.sha256(
        json.dumps(config, default=_jsonable, sort_keys=True).encode()).hexdigest()}
    found = _read_json(folder / "backup.json")
    if os.path.lexists(folder) and found != marker:
        if found.get("stage") == stage:
            raise CheckpointError(f"{folder}/ holds the training of an interrupted run of {stage} "
                                  f"with other settings: rerun that command to resume it, or "
                                  f"delete the folder to start this one")
        if not (folder.is_dir() and not folder.is_symlink() and not found
                and set(os.listdir(folder)) <= BACKUP_FILES):
            raise CheckpointError(f"{folder} is not a training backup of {stage}: refusing to "
                                  f"replace it; move it")
        shutil.rmtree(folder)  # ours, half made by a killed run
    try:
        folder.mkdir(exist_ok=True)
        with replacing(folder / "backup.json") as tmp:
            write_json(tmp, marker)
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot write ({e.strerror or e})") from None
    try:
        yield folder
    except (ValueError, CheckpointError):
        shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)


# A shared folder

def _manifest(folder):
    """{name: SHA-256} of the files this project wrote in shared `folder`."""
    return {name: sha for name, sha in _read_json(Path(folder) / MANIFEST).items()
            if isinstance(sha, str)}


def check_publishable(names, dest, flag):
    """Raise ValueError, before the work, unless `publish` may write or remove `names` in
    `dest`: never inside a stage's checkpoint folder (an input, say), whose files its
    stage.json lists, nor over what this project did not write."""
    bad = [n for n in names if Path(n).name != n or n in (".", "..", MANIFEST)]
    if bad:
        raise ValueError(f"{flag}: {bad}: a published name is a plain file name")
    dest = Path(dest).resolve()
    for folder in (dest, *dest.parents):
        if (folder / STAGE_FILE).is_file():
            where = "is" if folder == dest else "lies inside"
            raise ValueError(f"{flag} {dest} {where} the checkpoint {folder}/ of "
                             f"{stage_of(folder)}: its files are that stage's; choose another "
                             f"{flag}")
    found = foreign(dest, _manifest(dest), names)
    if found:
        raise ValueError(f"{flag} {dest}: {', '.join(found)}: not written by this project (or "
                         f"changed since): refusing to replace or remove what is yours; move "
                         f"it or choose another {flag}")


def publish(names, source, dest, flag):
    """Copy the files `names` from folder `source` into `dest`, each atomically, so that the set
    in `dest` is one run's: a name that `source` lacks is removed from `dest` if this project
    wrote it there. Checked again (`check_publishable`) under the record's lock."""
    dest = Path(dest)
    check_publishable(names, dest, flag)  # before anything is created in `dest`
    with lock(dest / PUBLISHING, flag, shared=True):  # writers of other names update it too
        check_publishable(names, dest, flag)
        written = _manifest(dest)
        for name in names:
            if (Path(source) / name).is_file():
                with replacing(dest / name) as tmp:
                    shutil.copyfile(Path(source) / name, tmp)
                written[name] = _sha256(dest / name)
            elif name in written:
                (dest / name).unlink(missing_ok=True)
                del written[name]
        with replacing(dest / MANIFEST) as tmp:
            tmp.write_text(json.dumps(written, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def published(outputs, writer):
    """Write files into shared folders as one run: `outputs` is {flag: (folder, names)}.

    Before the block (so before the work): every folder is checked (`check_publishable`) and
    locked for `writer` (`.<writer>.lock`: one such run at a time, and the folder is writable).
    The block writes the files into the yielded temporary folder; when it succeeds, each folder
    gets its names (`publish`); when it fails, nothing is published. A full disk, whose error
    often names no file, is one line naming where the files were going.
    """
    if writer == PUBLISHING:
        raise ValueError(f"{writer!r} names the lock of the record of what was published")
    for flag, (folder, names) in outputs.items():
        check_publishable(names, folder, flag)
    try:
        with contextlib.ExitStack() as stack:
            locked = {}
            for flag, (folder, _) in outputs.items():
                if Path(folder).resolve() not in locked:  # one lock per folder, however many
                    locked[Path(folder).resolve()] = flag
                    stack.enter_context(lock(Path(folder) / writer, flag))
            out = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            yield out
            for flag, (folder, names) in outputs.items():
                publish(names, out, folder, flag)
    except OSError as e:
        failure = _unnamed(e)
        if not failure:
            raise
        where = ", ".join(f"{flag} {folder}" for flag, (folder, _) in outputs.items())
        raise CheckpointError(f"{failure} writing {where} (or the temporary folder in "
                              f"{tempfile.gettempdir()}); nothing was published that was not "
                              f"whole") from None
