"""Image-classification data in memory: MNIST by default, or a user's own images (`--dataset`).

A user's dataset comes in MNIST's layouts but without MNIST's checksums: a folder of four IDX
files (train-images, train-labels, t10k- or test-images, t10k- or test-labels; raw or .gz) or one
`.npz` with x_train [N, H, W], y_train [N], x_test, y_test. Images are grey, of any size H x W;
labels are integers 0 .. C-1. The networks take their input and output sizes from the splits
(`image_shape`, `num_classes`). Every check names the file it failed on.
"""
import hashlib
from pathlib import Path

import numpy as np

import configs
from datasets import mnist
from utils import memory
from utils.errors import DataError, MnistError

VALIDATION_FRACTION = 1 / 12  # the first 1/12 of the training images: MNIST's 5,000 of 60,000
IDX_NAMES = {"x_train": ("train-images",), "y_train": ("train-labels",),
             "x_test": ("t10k-images", "test-images"), "y_test": ("t10k-labels", "test-labels")}


def fingerprint(*arrays):
    """SHA-256 of arrays' dtypes, shapes and bytes: which data a checkpoint was trained on."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).data)
    return digest.hexdigest()


def splits(x_train, y_train, x_test, y_test, sizes=(None, None, None), n_val=None,
           source="MNIST"):
    """{"train", "validation", "test": (float32 [n, H*W] pixels, int32 labels)} plus
    "image_shape" (H, W), "num_classes", and the data's "source" and "sha256" (of all of it,
    whatever `sizes` keeps, so that a --quick run matches its full-size checkpoints).

    Validation is the first `n_val` training images (default: 1/12 of them), train the rest;
    training images sorted by class, which would leave it fewer than half the classes, are
    refused (DataError).
    uint8 pixels are scaled to [0, 1]; float pixels are kept as they are. `sizes` (train,
    validation, test) keep only the first n examples of a split (the scripts' --quick mode).
    """
    n_val = int(len(y_train) * VALIDATION_FRACTION) if n_val is None else n_val
    classes, seen = np.unique(y_train[n_val:]), np.unique(y_train[:n_val])
    if len(seen) < min(n_val, len(classes)) / 2:  # sorted by class: nothing to choose on
        raise DataError(f"{source}: the validation split (the first {n_val:,} training images) "
                        f"holds {len(seen)} of the {len(classes)} classes: the training images "
                        f"look sorted by class; shuffle them (one permutation for x_train and "
                        f"y_train)")

    def prep(x, y, n):
        x = x[:n].reshape(len(x[:n]), -1).astype(np.float32)
        return (x / 255.0 if x_train.dtype == np.uint8 else x), y[:n].astype(np.int32)

    return {"train": prep(x_train[n_val:], y_train[n_val:], sizes[0]),
            "validation": prep(x_train[:n_val], y_train[:n_val], sizes[1]),
            "test": prep(x_test, y_test, sizes[2]),
            "image_shape": tuple(int(n) for n in x_train.shape[1:]),
            "num_classes": int(max(y_train.max(), y_test.max())) + 1,
            "source": source, "sha256": fingerprint(x_train, y_train, x_test, y_test)}


def _find_idx(folder, prefixes):
    found = [p for prefix in prefixes for p in sorted(folder.glob(f"{prefix}*")) if p.is_file()]
    if len(found) != 1:
        names = ", ".join(p.name for p in found)
        what = f"{len(found)} files ({names})" if found else "no file"
        raise DataError(f"{folder}: {what} named {' or '.join(p + '*' for p in prefixes)}; a "
                        f"dataset folder holds exactly one IDX file of each split")
    return found[0]


def _read_idx_folder(folder):
    arrays, files = {}, {}
    for key, prefixes in IDX_NAMES.items():
        files[key] = _find_idx(folder, prefixes)
        try:
            arrays[key] = mnist.read_idx(files[key])
        except MnistError as e:
            raise DataError(str(e).replace("an MNIST IDX", "a uint8 IDX")) from None
    return arrays, files


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = sorted(set(IDX_NAMES) - set(f.files))
            if missing:
                raise DataError(f"{path} lacks the array(s) {missing}; a dataset .npz holds "
                                f"x_train, y_train, x_test, y_test")
            too_big = memory.shortfall(sum(f.zip.getinfo(f"{key}.npy").file_size
                                           for key in IDX_NAMES))
            if too_big:  # checked on the sizes the archive lists, before anything is read
                raise DataError(f"{path}: its arrays {too_big}")
            return {key: f[key] for key in IDX_NAMES}, dict.fromkeys(IDX_NAMES, path)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged npz fails in zipfile, NumPy, ... alike
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise DataError(f"cannot read {path} as a dataset .npz ({reason})") from None


def check_arrays(arrays, files):
    """Raise DataError naming the file unless the four arrays form an image-classification set."""
    for key in ("x_train", "x_test"):
        x = arrays[key]
        if x.ndim != 3 or 0 in x.shape:
            raise DataError(f"{files[key]}: {key} must be grey images [N, H, W], got shape "
                            f"{x.shape}")
        if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"{files[key]}: {key} must be uint8 or float pixels, got {x.dtype}")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DataError(f"{files[key]}: {key} holds NaN or infinite pixels")
    if arrays["x_test"].shape[1:] != arrays["x_train"].shape[1:]:
        raise DataError(f"{files['x_test']}: test images are {arrays['x_test'].shape[1:]}, "
                        f"training images {arrays['x_train'].shape[1:]}")
    for key, images in (("y_train", "x_train"), ("y_test", "x_test")):
        y = arrays[key]
        if y.ndim != 1 or len(y) != len(arrays[images]):
            raise DataError(f"{files[key]}: {key} must hold one label per image of {images} "
                            f"({len(arrays[images])}), got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):  # strings, bytes, floats: no range to show
            raise DataError(f"{files[key]}: {key} must be integer class indices >= 0, got "
                            f"{y.dtype} labels")
        if y.min() < 0:
            raise DataError(f"{files[key]}: {key} must be integer class indices >= 0, got "
                            f"{y.dtype} from {y.min()} to {y.max()}")
    classes = int(arrays["y_train"].max()) + 1
    seen = np.unique(arrays["y_train"])
    if len(seen) != classes:  # also what keeps a label of 10^9 from making a 10^9-unit layer
        missing = sorted(set(range(min(classes, len(seen) + 5))) - set(seen.tolist()))[:5]
        raise DataError(f"{files['y_train']}: labels must be the class indices 0 .. C-1, each "
                        f"seen in training; they reach {classes - 1} but only {len(seen)} "
                        f"classes occur (none of {missing})")
    if classes < 2 or arrays["y_test"].max() >= classes:
        raise DataError(f"{files['y_test']}: labels must be 0 .. C-1 with C >= 2 classes seen in "
                        f"training (C = {classes}); test labels reach {arrays['y_test'].max()}")
    if len(arrays["y_train"]) * VALIDATION_FRACTION < 1:
        raise DataError(f"{files['y_train']}: {len(arrays['y_train'])} training images are too "
                        f"few to hold out 1/12 of them for validation")


def read_dataset(path):
    """(x_train, y_train, x_test, y_test) of a user's dataset: a .npz file or an IDX folder."""
    path = Path(path)
    if path.is_dir():
        arrays, files = _read_idx_folder(path)
    elif path.is_file():
        arrays, files = _read_npz(path)
    else:
        raise DataError(f"--dataset {path}: no such file or folder")
    check_arrays(arrays, files)
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


def load(dataset=None, data_dir=None, sizes=(None, None, None)):
    """The splits of a user's `dataset` if given, else of MNIST (found via `data_dir`, checked):
    MNIST's validation split is its first 5,000 training images, as in the original."""
    if dataset:
        return splits(*read_dataset(dataset), sizes, source=str(dataset))
    return splits(*mnist.load_raw(data_dir), sizes, mnist.VALIDATION_SIZE)


def sizes(quick):
    """(train, validation, test) examples a run keeps: the --quick subset, or all (None)."""
    q = configs.QUICK
    return (q["train_size"], q["val_size"], q["test_size"]) if quick else (None,) * 3


def from_flags(args):
    """The splits of MNIST or of --dataset (`load`) that a stage's flags (utils/cli.py) ask for:
    all, or the --quick subset."""
    return load(args.dataset, args.data_dir, sizes(args.quick))
