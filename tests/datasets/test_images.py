"""A user's own data (`--dataset`): an .npz or a folder of IDX files, any image size and classes."""
import numpy as np
import pytest

from datasets import images as datasets
from tests.helpers import write_idx
from utils.errors import DataError


def arrays(n=24, h=9, w=7, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.integers(0, 256, (n, h, w), np.uint8),
                y_train=np.arange(n) % classes,
                x_test=rng.integers(0, 256, (6, h, w), np.uint8), y_test=np.arange(6) % classes)


def test_an_npz_gives_splits_sized_from_the_data(tmp_path):
    np.savez(tmp_path / "d.npz", **arrays())
    data = datasets.load(tmp_path / "d.npz")
    assert data["image_shape"] == (9, 7) and data["num_classes"] == 3
    assert len(data["validation"][1]) == 2 and len(data["train"][1]) == 22  # 1/12 held out
    assert data["train"][0].shape == (22, 63) and data["train"][0].dtype == np.float32
    assert data["test"][0].max() <= 1.0 and data["test"][1].dtype == np.int32


def test_an_idx_folder_reads_like_mnist(tmp_path):
    a = arrays()
    for name, key in [("train-images-idx3-ubyte.gz", "x_train"), ("train-labels-idx1-ubyte",
                      "y_train"), ("t10k-images-idx3-ubyte", "x_test"),
                      ("t10k-labels-idx1-ubyte", "y_test")]:
        write_idx(tmp_path / name, a[key])
    data = datasets.load(tmp_path)
    np.testing.assert_array_equal(data["train"][1], a["y_train"][2:])
    assert data["image_shape"] == (9, 7)


def test_float_pixels_are_kept_as_given(tmp_path):
    a = dict(arrays(), x_train=np.full((24, 4, 4), 3.5), x_test=np.zeros((6, 4, 4)))
    np.savez(tmp_path / "d.npz", **a)
    assert datasets.load(tmp_path / "d.npz")["train"][0].max() == 3.5


@pytest.mark.parametrize("change, match", [
    (dict(x_train=None), r"lacks the array\(s\) \['x_train'\]"),
    (dict(x_train=np.zeros((24, 49), np.uint8)), r"x_train must be grey images \[N, H, W\]"),
    (dict(x_test=np.zeros((6, 9, 8), np.uint8)), r"test images are \(9, 8\), training images"),
    (dict(y_train=np.zeros(23, int)), "y_train must hold one label per image of x_train"),
    (dict(y_test=np.full(6, -1)), "y_test must be integer class indices >= 0"),
    (dict(y_train=np.full(24, 0.5)), "y_train must be integer class indices"),
    (dict(y_train=np.array([str(i % 3) for i in range(24)])),
     "y_train must be integer class indices >= 0, got <U1 labels"),
    (dict(y_test=np.array([b"a"] * 6)),
     r"y_test must be integer class indices >= 0, got \|S1 labels"),
    (dict(y_test=np.full(6, 3)), "test labels reach 3"),
    (dict(y_train=np.r_[np.arange(23) % 3, 10 ** 9]),
     r"they reach 1000000000 but only 4 classes occur \(none of \[3, 4, 5, 6, 7\]\)"),
    (dict(y_train=np.arange(24) % 3 * 2), r"they reach 4 but only 3 classes occur \(none of "
                                         r"\[1, 3\]\)"),
    (dict(x_train=np.full((24, 9, 7), np.nan)), "x_train holds NaN or infinite pixels")])
def test_a_malformed_npz_is_one_error_naming_it(tmp_path, change, match):
    a = {k: v for k, v in dict(arrays(), **change).items() if v is not None}
    np.savez(tmp_path / "mine.npz", **a)
    with pytest.raises(DataError, match=f"mine.npz.*{match}"):
        datasets.load(tmp_path / "mine.npz")


def test_a_damaged_npz_and_a_missing_path_are_named(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read .*bad.npz as a dataset .npz"):
        datasets.load(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="--dataset .*nowhere: no such file or folder"):
        datasets.load(tmp_path / "nowhere")


def test_an_idx_folder_missing_or_doubling_a_split_is_named(tmp_path):
    a = arrays()
    write_idx(tmp_path / "train-images-idx3-ubyte", a["x_train"])
    write_idx(tmp_path / "train-labels-idx1-ubyte", a["y_train"])
    with pytest.raises(DataError, match="no file named t10k-images\\* or test-images\\*"):
        datasets.load(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", a["x_test"])
    write_idx(tmp_path / "test-images-idx3-ubyte", a["x_test"])
    with pytest.raises(DataError, match="2 files \\(t10k-images-idx3-ubyte, test-images"):
        datasets.load(tmp_path)


def test_training_images_sorted_by_class_are_refused_naming_the_fix(tmp_path):
    a = dict(arrays(n=240, classes=10), y_train=np.repeat(np.arange(10), 24))  # class order
    np.savez(tmp_path / "d.npz", **a)
    with pytest.raises(DataError, match=r"validation split \(the first 20 training images\) "
                                        r"holds 1 of the 10 classes: .* shuffle them"):
        datasets.load(tmp_path / "d.npz")
