"""Writing one file so that a reader sees the old file or the new one, never half of one."""
import contextlib
import os
from pathlib import Path


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
