import gzip

import numpy as np
import pytest

from utils import mnist


def write_idx(path, array, magic_dims=None):
    ndim = magic_dims or array.ndim
    header = (0x800 + ndim).to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_reads_images_and_labels(tmp_path, suffix):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    labels = np.array([3, 7])
    np.testing.assert_array_equal(mnist.read_idx(write_idx(tmp_path / f"i{suffix}", images)), images)
    np.testing.assert_array_equal(mnist.read_idx(write_idx(tmp_path / f"l{suffix}", labels)), labels)


def test_truncated_file_is_an_error_naming_it(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28)))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(mnist.MnistError, match="train-images-idx3-ubyte is truncated"):
        mnist.read_idx(path)


def test_corrupt_gzip_is_an_error_naming_it(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(mnist.MnistError, match="t10k-labels-idx1-ubyte.gz"):
        mnist.read_idx(path)


def test_wrong_magic_is_rejected(tmp_path):
    path = tmp_path / "x"
    path.write_bytes((0x1234).to_bytes(4, "big") + bytes(8))
    with pytest.raises(mnist.MnistError, match="not an MNIST IDX file"):
        mnist.read_idx(path)


def test_checksum_mismatch_is_rejected(tmp_path):
    path = write_idx(tmp_path / "labels", np.array([1, 2, 3]))
    with pytest.raises(mnist.MnistError, match="SHA-256"):
        mnist.read_idx(path, expected_sha256="0" * 64)


def test_data_dir_without_mnist_says_what_it_expects(tmp_path):
    with pytest.raises(mnist.MnistError, match="no MNIST in"):
        mnist.load_raw(tmp_path)


def test_split_is_first_5000_for_validation(monkeypatch):
    x_train = np.arange(6000, dtype=np.uint8).reshape(6000, 1, 1).repeat(2, 1)
    y_train = np.arange(6000) % 10
    raw = (x_train, y_train, x_train[:100], y_train[:100])
    monkeypatch.setattr(mnist, "load_raw", lambda data_dir=None: raw)
    splits = mnist.load_mnist()
    assert len(splits["validation"][1]) == 5000 and len(splits["train"][1]) == 1000
    assert splits["train"][0].shape == (1000, 2) and splits["train"][0].dtype == np.float32
    np.testing.assert_array_equal(splits["train"][1], y_train[5000:])
    assert splits["test"][0].max() <= 1.0 and splits["train"][1].dtype == np.int32
