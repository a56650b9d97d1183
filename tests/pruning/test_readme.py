"""The README's example on a user's model runs as written, from an empty folder, with nothing of
this repository importable but the installed package; and the package installs with pip."""
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import keras
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def example():
    section = README.read_text()[README.read_text().index("## On your own Keras 3 model"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_example(python, folder):
    (folder / "example.py").write_text(example())
    env = {"KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(python), "example.py"], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_readmes_example_runs_as_written_from_another_folder(tmp_path):
    result = run_example(sys.executable, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "attention/query/kernel" in result.stdout and "sparsity 0.900" in result.stdout
    assert (tmp_path / "pruned.keras").is_file()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="packaging is the same on every backend: checked once")
def test_pip_install_makes_a_package_that_needs_only_keras_and_numpy(tmp_path):
    """`pip install .` into a fresh virtualenv (pip fetches setuptools to build it, as for any
    user); Keras and the backend then come from this interpreter (a .pth file), so that the test
    downloads no framework."""
    source = tmp_path / "source"  # a copy: building writes into the folder it installs from
    shutil.copytree(README.parent / "pruning", source / "pruning",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(README.parent / name, source)
    venv.create(tmp_path / "env", with_pip=True)
    python = tmp_path / "env" / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                             str(source)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True).stdout.strip()
    (Path(site) / "host.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    check = ("import importlib.metadata as m, pruning; print(pruning.__file__); "
             "print(sorted(r.split('>')[0].split('=')[0] for r in m.requires('keras-pruning') "
             "if 'extra' not in r))")
    out = subprocess.run([str(python), "-c", check], cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    where, requires = out.stdout.splitlines()[-2:]
    assert where.startswith(site) and requires == "['keras', 'numpy']"
    result = run_example(python, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sparsity 0.900" in result.stdout
