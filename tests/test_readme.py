"""The README's example on a user's conv net runs as written, from the repo's root."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_readmes_keras_example_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## On your own Keras 3 model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "example.py").write_text(code)
    # Run in tmp_path (it saves pruned.keras and pruned_saved_model/ into the current folder),
    # with the repo importable as it is from its root.
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sparsity: 0.9000" in result.stdout and "total" in result.stdout
    assert (tmp_path / "pruned.keras").is_file()
    assert (tmp_path / "pruned_saved_model" / "saved_model.pb").is_file()
