"""Writing files so that a reader sees the old file or the new one, never half of one, and
publishing them into folders a user may share (pics/, results/, or any --pics-dir) without ever
replacing or removing a file this project did not write.

A folder published into holds `.written-by-pruning.json`: {name: SHA-256} of every file this
project put there. A file is this project's to replace or remove only if it is listed and
unchanged; anything else under a name it would write is refused before the work starts.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from utils.checkpoints import STAGE_FILE, stage_of

MANIFEST = ".written-by-pruning.json"


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


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _manifest(folder):
    try:
        written = json.loads((Path(folder) / MANIFEST).read_text())
        return written if isinstance(written, dict) else {}
    except (OSError, ValueError):
        return {}


def not_ours(names, dest):
    """The names among `names` that `dest` holds but this project did not write (or that were
    changed since)."""
    written = _manifest(dest)
    return [n for n in names if (Path(dest) / n).exists()
            and not ((Path(dest) / n).is_file() and written.get(n) == _sha256(Path(dest) / n))]


def check_publishable(names, dest, flag):
    """Raise ValueError, before the work, unless `publish` may write or remove `names` in
    `dest`: never inside a stage's checkpoint folder (an input, say), whose files its
    stage.json lists, nor over what this project did not write."""
    dest = Path(dest).resolve()
    for folder in (dest, *dest.parents):
        if (folder / STAGE_FILE).is_file():
            where = "is" if folder == dest else "lies inside"
            raise ValueError(f"{flag} {dest} {where} the checkpoint {folder}/ of "
                             f"{stage_of(folder)}: its files are that stage's; choose another "
                             f"{flag}")
    foreign = not_ours(names, dest)
    if foreign:
        raise ValueError(f"{flag} {dest}: {', '.join(foreign)}: not written by this project (or "
                         f"changed since): refusing to replace or remove what is yours; move "
                         f"it or choose another {flag}")


def publish(names, source, dest, flag):
    """Copy the files `names` from folder `source` into `dest`, each atomically, so that the set
    in `dest` is one run's: a name that `source` lacks is removed from `dest` if this project
    wrote it there. Checked again (`check_publishable`) under the manifest's lock."""
    dest = Path(dest)
    check_publishable(names, dest, flag)  # before anything is created in `dest`
    dest.mkdir(parents=True, exist_ok=True)
    fd = os.open(dest / f"{MANIFEST}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # writers of other names in `dest` update it too
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
    finally:
        os.close(fd)
