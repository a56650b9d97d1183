import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

OUTPUTS = ("saved_models", "pics", "results", "benchmarks/results", "data")


def listing():
    """(path, size, mtime) of everything under the repo's output folders."""
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                  for folder in OUTPUTS for p in (REPO / folder).rglob("*"))


@pytest.fixture(scope="session", autouse=True)
def repo_outputs_untouched():
    """Tests write only into temporary folders, never into the repo's checkpoints or figures."""
    before = listing()
    yield
    assert listing() == before, "a test wrote into the repo's output folders"
