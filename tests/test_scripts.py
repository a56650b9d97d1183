"""The three stages as a user runs them: subprocesses in quick mode, in a temporary folder."""
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run(script, *args, cwd):
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd,
                          capture_output=True, text=True)


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run train -> prune -> deploy once in --quick mode; the folder they worked in."""
    cwd = tmp_path_factory.mktemp("pipeline")
    for script in ("train_network_dense.py", "prune_network.py", "deploy_pruned_model.py"):
        result = run(script, "--quick", cwd=cwd)
        assert result.returncode == 0, f"{script} failed:\n{result.stderr[-3000:]}"
    return cwd


def test_pipeline_leaves_checkpoints_plots_and_report(pipeline):
    for path in ["saved_models/network_dense/model.keras",
                 "saved_models/network_dense_pruned/model.keras",
                 "saved_models/network_dense_pruned/masks.npz",
                 "saved_models/network_sparse/saved_model/saved_model.pb",
                 "saved_models/network_sparse/weights.coo16.npz",
                 "saved_models/network_sparse/weights.shared-5bit.npz",
                 "saved_models/network_sparse/weights.shared-5bit-huffman.npz",
                 "saved_models/network_sparse/compression_report.txt",
                 "pics/weights_distribution_before_pruning.png",
                 "pics/weights_distribution_after_pruning.png",
                 "pics/weights_distribution_after_fine_tuning.png"]:
        assert (pipeline / path).stat().st_size > 0, path
    report = (pipeline / "saved_models/network_sparse/compression_report.txt").read_text()
    assert "coo16" in report and "shared-5bit" in report and "deployed: coo16" in report


def test_sparse_stage_matches_the_pruned_stage(pipeline):
    pruned = json.loads((pipeline / "saved_models/network_dense_pruned/config.json").read_text())
    sparse = json.loads((pipeline / "saved_models/network_sparse/config.json").read_text())
    assert sparse["results"]["test_accuracy"] == pruned["results"]["test_accuracy"]
    assert sparse["results"]["max_logit_difference"] <= 1e-4
    assert sum(sparse["results"]["nonzeros"].values()) == pruned["results"]["nonzero_weights"]


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    result = run("prune_network.py", "--quick", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert error_lines(result) == [
        "error: no checkpoint in saved_models/network_dense/: run train_network_dense.py first"]
    result = run("deploy_pruned_model.py", "--quick", cwd=tmp_path)
    assert result.returncode != 0 and "run prune_network.py first" in error_lines(result)[0]


def test_threshold_that_prunes_everything_is_one_clear_line(pipeline, tmp_path):
    result = run("prune_network.py", "--quick", "--threshold", "10", "--dense-dir",
                 str(pipeline / "saved_models/network_dense"), "--model-dir", str(tmp_path / "p"),
                 cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(error_lines(result)) == 1 and "removes every weight" in error_lines(result)[0]
    assert not (tmp_path / "p").exists()


def test_unknown_flag_and_help(tmp_path):
    assert "--threshold" in run("prune_network.py", "--help", cwd=tmp_path).stdout
    assert run("train_network_dense.py", "--epochs", "x", cwd=tmp_path).returncode != 0


def test_deploying_a_lossy_format_exports_its_weights(pipeline, tmp_path):
    result = run("deploy_pruned_model.py", "--quick", "--format", "shared-4bit", "--pruned-dir",
                 str(pipeline / "saved_models/network_dense_pruned"), "--model-dir",
                 str(tmp_path / "s"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "s/config.json").read_text())
    assert meta["results"]["format"] == "shared-4bit"
    assert meta["results"]["formats"]["shared-4bit"]["compression"] > \
        meta["results"]["formats"]["csr8"]["compression"] > meta["results"]["compression"]


def test_unknown_format_is_one_clear_line(tmp_path):
    result = run("deploy_pruned_model.py", "--quick", "--format", "zip", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "unknown format 'zip'" in error_lines(result)[0]


def test_prune_with_a_criterion_and_schedule(pipeline, tmp_path):
    result = run("prune_network.py", "--quick", "--criterion", "global-sparsity", "--sparsity",
                 "0.9", "--schedule", "gradual", "--dense-dir",
                 str(pipeline / "saved_models/network_dense"), "--model-dir", str(tmp_path / "p"),
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "p/config.json").read_text())
    assert meta["config"]["schedule"] == "gradual"
    assert meta["results"]["nonzero_weights"] == round(0.1 * (784 * 512 + 512 * 512 + 512 * 10))


def test_sweep_runs_in_quick_mode(pipeline, tmp_path):
    result = run("sweep_pruning.py", "--quick", "--dense-dir",
                 str(pipeline / "saved_models/network_dense"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = (tmp_path / "results/sweep_pruning.csv").read_text().splitlines()
    assert rows[0].startswith("schedule,") and len(rows) == 1 + 1 + 2 * 3
    assert (tmp_path / "results/layer_sensitivity.csv").stat().st_size > 0
    for png in ("accuracy_vs_compression.png", "layer_sensitivity.png"):
        assert (tmp_path / "pics" / png).stat().st_size > 0


def test_corrupt_dataset_is_one_line_naming_the_file(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (data / name).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)  # header says 0 images
    result = run("train_network_dense.py", "--quick", "--data-dir", str(data), cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = error_lines(result)
    assert "train-images-idx3-ubyte" in line
