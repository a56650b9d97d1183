"""The scripts as a user runs them, in quick mode, writing only into temporary folders: the first
pipeline, the runs that overlap or take signals and the benchmarks as subprocesses; the others in
this process, as `python script.py` runs them (`run`), which saves a TensorFlow start (6 s on 2
cores) per run; runs that stop before the work via `helpers.run_script`.

Failures must be one `error:` line, no traceback, and leave every earlier file as it was.
"""
import contextlib
import hashlib
import io
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
import traceback

import keras
import numpy as np
import pytest

import configs
from experiments import papers
from tests.conftest import REPO
from tests.helpers import run_script
from utils.errors import CheckpointError


def run(script, *args, cwd, fresh=False):
    """Run `script` with `args` in folder `cwd`: a CompletedProcess with its exit code, stdout and
    stderr. `fresh`: in a new interpreter; else in this one, as the interpreter would (`cli.run`'s
    "error: ..." exit message on stderr and status 1; an unexpected exception's traceback), with
    the working folder, `sys.argv` and the signal handlers put back."""
    if fresh:
        return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd,
                              capture_output=True, text=True)
    out, err, code = io.StringIO(), io.StringIO(), 0
    argv, folder = sys.argv, os.getcwd()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        os.chdir(cwd)
        sys.argv = [str(REPO / script), *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(REPO / script), run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
            except Exception:  # noqa: BLE001 - reported as the interpreter would
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = argv
        os.chdir(folder)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        keras.backend.clear_session()
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def one_error_line(result):
    """The single `error:` line of a failed run (and no traceback)."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = error_lines(result)
    return line


def digest(folder):
    """{relative path: sha256} of every file under `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run train -> prune -> deploy once in --quick mode into dense/, pruned/, sparse/; the folder.

    The repo's committed figures must come out of it untouched (--quick never writes pics/).
    """
    cwd = tmp_path_factory.mktemp("pipeline")
    pics_before = digest(REPO / "pics")
    run_stages(cwd, fresh=True)
    assert digest(REPO / "pics") == pics_before
    return cwd


def test_pipeline_leaves_checkpoints_plots_and_report(pipeline):
    for path in ["dense/model.keras", "dense/stage.json", "pruned/model.keras",
                 "pruned/weights_distribution_before_pruning.png",
                 "pruned/weights_distribution_after_pruning.png",
                 "pruned/weights_distribution_after_fine_tuning.png",
                 "sparse/saved_model/saved_model.pb", "sparse/weights.coo16.npz",
                 "sparse/weights.shared-5bit.npz", "sparse/weights.shared-5bit-huffman.npz",
                 "sparse/compression_report.txt", "sparse/model.tflite",
                 "sparse/model_int8.tflite"]:
        assert (pipeline / path).stat().st_size > 0, path
    report = (pipeline / "sparse/compression_report.txt").read_text()
    assert "coo16" in report and "shared-5bit" in report and "deployed: coo16" in report
    results = json.loads((pipeline / "sparse/config.json").read_text())["results"]
    smallest = min(results["formats"], key=lambda f: results["formats"][f]["bytes"])
    assert f"where the bytes of {smallest} go:" in report and "not counted:" in report
    widths = results["mixed_bits"]["bits"]  # each layer's own, chosen on validation, stored
    assert set(widths) == {"fc1", "fc2", "fc3"} and all(2 <= b <= 8 for b in widths.values())
    assert "per-layer code widths of shared-mixed-huffman" in report
    assert results["formats"]["shared-mixed-huffman"]["bytes"] > 0
    tflite = json.loads((pipeline / "sparse/config.json").read_text())["results"]["tflite"]
    slow = [name for name, r in tflite.items() if r.get("xnnpack") is False]  # said in the report
    assert ("XNNPACK could not prepare it" in report) == bool(slow), (slow, report)
    scale, zero_point = tflite["model_int8.tflite"]["input_quantization"]  # MNIST's: exact
    assert tflite["model_int8.tflite"]["input"] == "int8" and zero_point == -128 and \
        scale == pytest.approx(1 / 255) and "reads int8 pixels: round(pixel / 0.00392157) + " \
        "(-128)" in report
    assert not [p for p in pipeline.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_sparse_stage_matches_the_pruned_stage(pipeline):
    pruned = json.loads((pipeline / "pruned/config.json").read_text())
    sparse = json.loads((pipeline / "sparse/config.json").read_text())
    assert sparse["results"]["test_accuracy"] == pruned["results"]["test_accuracy"]
    assert sparse["results"]["max_logit_difference"] <= 1e-4
    tflite = sparse["results"]["tflite"]
    assert tflite["model.tflite"]["max_logit_difference"] <= 1e-4
    assert tflite["model.tflite"]["test_accuracy"] == pruned["results"]["test_accuracy"]
    assert (pipeline / "sparse/model.tflite").stat().st_size == tflite["model.tflite"]["bytes"]
    assert sum(sparse["results"]["nonzeros"].values()) == pruned["results"]["nonzero_weights"]
    for fmt in ("coo16", "csr8", "bitmask"):  # lossless: stored without its dead units, the same
        stored = sparse["results"]["formats"][fmt]  # predictions
        assert stored["test_accuracy"] == pruned["results"]["test_accuracy"], fmt
        assert stored["units"]["fc3"] == 10 and stored["units"]["fc1"] <= 512
    assert "stored without their dead units" in (pipeline / "sparse/compression_report.txt"
                                                 ).read_text()


def test_missing_checkpoint_is_one_clear_line(tmp_path, monkeypatch):
    line = run_script("prune_network.py", "--quick", "--dense-dir", "none", "--model-dir", "out",
                      cwd=tmp_path, monkeypatch=monkeypatch)
    assert line == f"error: no checkpoint in {tmp_path}/none/: run train_network_dense.py first"
    line = run_script("deploy_pruned_model.py", "--quick", "--pruned-dir", "none", "--model-dir",
                      "out", cwd=tmp_path, monkeypatch=monkeypatch)
    assert "run prune_network.py first" in line
    assert [p.name for p in tmp_path.iterdir()] == [".out.lock"]


def test_a_failed_run_leaves_the_previous_checkpoint_and_writes_nothing(pipeline, tmp_path,
                                                                        monkeypatch):
    shutil.copytree(pipeline / "pruned", tmp_path / "pruned")
    before = digest(tmp_path / "pruned")
    line = run_script("prune_network.py", "--quick", "--threshold", "10", "--dense-dir",
                      str(pipeline / "dense"), "--model-dir", "pruned", cwd=tmp_path,
                      monkeypatch=monkeypatch)
    assert "threshold 10.0 removes every weight of fc1/kernel: choose a smaller threshold" in line
    assert digest(tmp_path / "pruned") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pruned.lock", "pruned"]


@pytest.mark.parametrize("target", ["users folder", "its own input", "a file"])
def test_an_output_that_is_not_the_stages_is_refused_and_left_intact(pipeline, tmp_path, target,
                                                                      monkeypatch):
    dense = tmp_path / "dense"
    shutil.copytree(pipeline / "dense", dense)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    model_dir = {"users folder": "mine", "its own input": "dense", "a file": "file"}[target]
    before = digest(tmp_path)
    line = run_script("prune_network.py", "--quick", "--dense-dir", "dense", "--model-dir",
                      model_dir, cwd=tmp_path, monkeypatch=monkeypatch)
    assert f"--model-dir {tmp_path / model_dir}" in line
    assert "refusing to" in line and digest(tmp_path) == before


def test_a_damaged_checkpoint_is_one_line_naming_the_file_and_the_script(pipeline, tmp_path,
                                                                          monkeypatch):
    shutil.copytree(pipeline / "dense", tmp_path / "dense")
    model = tmp_path / "dense/model.keras"
    data = bytearray(model.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = os.urandom(4096)  # a few KiB overwritten
    model.write_bytes(bytes(data))
    line = run_script("prune_network.py", "--quick", "--dense-dir", "dense", "--model-dir",
                      "pruned", cwd=tmp_path, monkeypatch=monkeypatch)
    assert f"{model} is damaged or unreadable" in line and "rerun train_network_dense.py" in line
    assert not (tmp_path / "pruned").exists()


def test_deploying_a_dense_checkpoint_is_refused(pipeline, tmp_path, monkeypatch):
    line = run_script("deploy_pruned_model.py", "--quick", "--pruned-dir", str(pipeline / "dense"),
                      "--model-dir", "s", cwd=tmp_path, monkeypatch=monkeypatch)
    assert "holds a checkpoint of train_network_dense.py, not the one of prune_network.py" in line


def test_pruning_inside_a_checkpoint_not_pruned_in_groups_is_refused(pipeline, tmp_path,
                                                                     monkeypatch):
    line = run_script("prune_network.py", "--quick", "--structured-dir", str(pipeline / "pruned"),
                      "--model-dir", "p", cwd=tmp_path, monkeypatch=monkeypatch)
    assert "was not pruned with --structure (it has no whole groups to shrink)" in line
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("script", ["train_network_dense.py", "prune_network.py"])
def test_a_shift_as_large_as_the_images_is_refused_before_training(script, pipeline, tmp_path,
                                                                   monkeypatch):
    dense = ["--dense-dir", str(pipeline / "dense")] if script == "prune_network.py" else []
    line = run_script(script, "--quick", "--shift", "28", *dense, "--model-dir", "p",
                      cwd=tmp_path, monkeypatch=monkeypatch)
    assert line == ("error: --shift 28: the images are 28x28 pixels; a shift must be smaller "
                    "than both sides (at most 27)")
    assert not (tmp_path / "p").exists()


def test_a_second_run_on_the_same_output_is_refused_and_the_first_finishes(pipeline, tmp_path):
    """The first run is paused (SIGSTOP) once it has claimed its output, so the two overlap."""
    args = ["--quick", "--dense-dir", str(pipeline / "dense"), "--model-dir", "pruned"]
    first = subprocess.Popen([sys.executable, str(REPO / "prune_network.py"), *args],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".pruned.tmp-*")):
            assert first.poll() is None and time.monotonic() < deadline, "first run never started"
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)
        second = run("prune_network.py", *args, cwd=tmp_path, fresh=True)
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    assert "another run is writing" in one_error_line(second)
    assert json.loads((tmp_path / "pruned/stage.json").read_text())["stage"] == "prune_network.py"
    assert (tmp_path / "pruned/model.keras").stat().st_size > 0


def test_deploying_a_lossy_format_exports_its_weights(pipeline, tmp_path):
    result = run("deploy_pruned_model.py", "--quick", "--format", "shared-4bit", "--pruned-dir",
                 str(pipeline / "pruned"), "--model-dir", "s", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "s/config.json").read_text())
    assert meta["results"]["format"] == "shared-4bit"
    assert meta["results"]["formats"]["shared-4bit"]["compression"] > \
        meta["results"]["formats"]["csr8"]["compression"] > meta["results"]["compression"]


def test_prune_with_a_criterion_and_schedule(pipeline, tmp_path):
    result = run("prune_network.py", "--quick", "--criterion", "global-sparsity", "--sparsity",
                 "0.9", "--schedule", "gradual", "--dense-dir", str(pipeline / "dense"),
                 "--model-dir", "p", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "p/config.json").read_text())
    assert meta["config"]["schedule"] == "gradual"
    assert meta["results"]["nonzero_weights"] == round(0.1 * (784 * 512 + 512 * 512 + 512 * 10))
    assert not (tmp_path / "p/weights_distribution_after_pruning.png").exists()  # see its doc


def test_variational_dropout_prunes_what_it_learnt_and_deploys(pipeline, tmp_path):
    result = run("prune_network.py", "--quick", "--schedule", "variational", "--dense-dir",
                 str(pipeline / "dense"), "--model-dir", "p", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "p/config.json").read_text())
    assert meta["config"]["schedule"] == "variational"
    assert meta["config"]["lr_values"] == [1e-3, 1e-4]  # Adam's, not the recipe's SGD rates
    assert "sparse variational dropout, log alpha > 3" in result.stdout
    nonzero = meta["results"]["nonzero_weights"]
    assert 0 < nonzero < 784 * 512 + 512 * 512 + 512 * 10
    result = run("deploy_pruned_model.py", "--quick", "--pruned-dir", "p", "--model-dir", "s",
                 cwd=tmp_path)  # it loads the masks and checks the zeros under them
    assert result.returncode == 0, result.stderr[-2000:]
    sparse = json.loads((tmp_path / "s/config.json").read_text())["results"]
    assert sparse["test_accuracy"] == meta["results"]["test_accuracy"]


def test_variational_dropout_over_units_learns_a_smaller_network_that_deploys_shrunk(
        pipeline, tmp_path):
    """--schedule variational --structure units: a noise per unit, whole units pruned (the
    output layer's kept), then the deploy stage shrinks the network and deploys it, predicting
    as the pruned one."""
    result = run("prune_network.py", "--quick", "--schedule", "variational", "--structure",
                 "units", "--dense-dir", str(pipeline / "dense"), "--model-dir", "p", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "p/config.json").read_text())
    assert meta["config"]["structure"] == "units"
    result = run("deploy_pruned_model.py", "--quick", "--pruned-dir", "p", "--model-dir", "s",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    sparse = json.loads((tmp_path / "s/config.json").read_text())["results"]
    pruned, shrunk = ([int(n) for n in sparse["shrunk_sizes"][k].split("-")]
                      for k in ("pruned", "shrunk"))
    assert pruned == [784, 512, 512] and shrunk[0] == 784  # units may go, not the pixels
    assert all(a <= b for a, b in zip(shrunk, pruned))  # (--quick's 2 epochs may prune none)
    assert "shrunk (units pruned): 784-512-512 -> " in result.stdout
    assert sparse["test_accuracy"] == pytest.approx(meta["results"]["test_accuracy"], abs=1e-3)


def test_sweep_runs_in_quick_mode(pipeline, tmp_path):
    result = run("sweep_pruning.py", "--quick", "--dense-dir", str(pipeline / "dense"),
                 "--results-dir", "r", "--pics-dir", "p", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = (tmp_path / "r/sweep_pruning.csv").read_text().splitlines()
    assert rows[0].startswith("schedule,") and len(rows) == 1 + 1 + 2 * 3
    assert (tmp_path / "r/layer_sensitivity.csv").stat().st_size > 0
    for png in ("accuracy_vs_compression.png", "layer_sensitivity.png"):
        assert (tmp_path / "p" / png).stat().st_size > 0


def test_inference_benchmark_times_any_subset_of_variants(pipeline, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_inference", "--pruned-dir",
         str(pipeline / "pruned"), "--sparse-dir", str(pipeline / "sparse"), "--variants",
         "sparse-csr", "--batches", "2", "--repeats", "1", "--results-dir", str(tmp_path / "r")],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (written,) = (tmp_path / "r").glob("inference-*.json")
    assert sorted(json.loads(written.read_text())["timings"]["2"]) == [
        "dense", "sparse-csr", "tflite-dense", "tflite-dense-builtin"]


def test_block_pruning_deploys_a_block_sparse_tflite_and_benchmarks_it(pipeline, tmp_path):
    ran = ["--seed", "7", "--epochs", "2", "--lr-values", "5e-3", "5e-4", "--lr-boundaries", "1"]
    result = run("prune_network.py", "--quick", "--block", "1x4", "--criterion",
                 "layer-sparsity", "--sparsity", "0.9", "--dense-dir", str(pipeline / "dense"),
                 "--model-dir", "p", *ran, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    result = run("deploy_pruned_model.py", "--quick", "--pruned-dir", "p", "--model-dir", "s",
                 "--codebook-epochs", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    deployed = json.loads((tmp_path / "s/config.json").read_text())
    assert deployed["pruned"]["block"] == [1, 4]  # how it was pruned travels to the deploy stage
    assert_records_what_ran(deployed, tmp_path / "p", pipeline / "dense")
    tflite = deployed["results"]["tflite"]
    assert [l["storage"] for l in tflite["model.tflite"]["layers"]] == ["1x4 blocks"] * 3
    assert tflite["dense float32"]["bytes"] > 8 * tflite["model.tflite"]["bytes"]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_inference", "--pruned-dir", str(tmp_path / "p"),
         "--sparse-dir", str(tmp_path / "s"), "--variants", "tflite", "tflite-int8", "--batches",
         "3", "--repeats", "1", "--results-dir", str(tmp_path / "r")], cwd=REPO,
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (written,) = (tmp_path / "r").glob("inference-*.json")
    timings = json.loads(written.read_text())["timings"]["3"]
    assert timings["tflite-int8"]["baseline"] == "tflite-dense-int8"
    assert timings["tflite"]["baseline"] in ("dense", "tflite-dense", "tflite-dense-builtin")


def assert_records_what_ran(deployed, pruned_dir, dense_dir):
    """The deploy stage's record holds the pruned stage's as it ran (--seed 7 --epochs 2
    --lr-values 5e-3 5e-4 --lr-boundaries 1, not the recipe's defaults), byte for byte with
    its SHA-256, and that one the dense stage's."""
    raw = (pruned_dir / "config.json").read_bytes()
    upstream = deployed["config"]["upstream"]
    assert upstream["stage"] == "prune_network.py"
    assert upstream["folder"] == str(pruned_dir.resolve())
    assert upstream["sha256"] == hashlib.sha256(raw).hexdigest()
    assert upstream["record"] == json.loads(raw)
    assert deployed["pruned"] == upstream["record"]["config"]
    pruned = deployed["pruned"]
    assert (pruned["seed"], pruned["epochs"], pruned["quick"]) == (7, 2, True)
    assert (pruned["lr_values"], pruned["lr_boundaries"]) == ([5e-3, 5e-4], [1])
    dense = pruned["upstream"]
    assert dense["sha256"] == hashlib.sha256((dense_dir / "config.json").read_bytes()).hexdigest()
    assert dense["record"]["config"]["seed"] == configs.SEED
    for record in (deployed, upstream["record"], dense["record"]):
        assert record["software"]["pruning"] and record["software"]["keras"] == keras.__version__


def ctrl_c_at(monkeypatch, stopped_epoch):
    """Make the next training raise KeyboardInterrupt as epoch `stopped_epoch` (0-based) begins,
    after the previous one was saved."""
    from training import fit
    start = fit.EpochLog.on_epoch_begin

    def on_epoch_begin(log, epoch, logs=None):
        if epoch == stopped_epoch:
            raise KeyboardInterrupt
        start(log, epoch, logs)
    monkeypatch.setattr(fit.EpochLog, "on_epoch_begin", on_epoch_begin)


def test_an_interrupted_training_resumes_after_its_last_finished_epoch(tmp_path, monkeypatch):
    """Ctrl-C in epoch 3 of 3 leaves the state of epoch 2 in .dense.backup/ (and no checkpoint);
    the same command resumes from it, runs epoch 3 only, records that it resumed, and removes
    the backup. On moved images (--shift), so that the suite trains a dense network so too."""
    command = ("train_network_dense.py", "--quick", "--epochs", "3", "--shift", "1",
               "--model-dir", "dense")
    with monkeypatch.context() as m:
        ctrl_c_at(m, 2)
        stopped = run(*command, cwd=tmp_path)
    assert stopped.returncode == 130 and "interrupted (SIGINT)" in stopped.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dense.backup", ".dense.lock"]
    resumed = run(*command, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch 2 of 3" in resumed.stdout
    assert [line.split()[1] for line in resumed.stdout.splitlines()
            if line.startswith("epoch ")] == ["3/3"]
    record = json.loads((tmp_path / "dense" / "config.json").read_text())
    assert record["config"]["shift"] == 1
    assert [(h["epoch"], h.get("resumed", False)) for h in record["results"]["history"]] == [
        (1, False), (2, False), (3, True)]
    assert not (tmp_path / ".dense.backup").exists()


@pytest.mark.parametrize("schedule", [["--schedule", "gradual", "--criterion", "global-sparsity",
                                       "--sparsity", "0.8", "--prune-every", "5"],
                                      ["--schedule", "variational", "--kl-warmup-epochs", "1"]])
def test_an_interrupted_fine_tuning_resumes_to_the_same_masks_rule(pipeline, tmp_path,
                                                                    monkeypatch, schedule):
    """Gradual pruning (its masks follow the optimizer's restored step count) and variational
    dropout (a copy of the network with its own Adam) resume after Ctrl-C too: the checkpoint
    reaches the schedule's sparsity, its pruned weights are zero, the record says it resumed."""
    command = ("prune_network.py", "--quick", "--epochs", "2", "--lr-boundaries", "1",
               "--dense-dir", str(pipeline / "dense"), "--model-dir", "pruned", *schedule)
    with monkeypatch.context() as m:
        ctrl_c_at(m, 1)
        assert run(*command, cwd=tmp_path).returncode == 130
    resumed = run(*command, cwd=tmp_path)
    assert resumed.returncode == 0 and "resuming after epoch 1 of 2" in resumed.stdout, \
        resumed.stderr[-2000:]
    record = json.loads((tmp_path / "pruned" / "config.json").read_text())["results"]
    assert [h.get("resumed", False) for h in record["history"]] == [False, True]
    if "gradual" in schedule:
        assert record["history"][-1]["sparsity"] == pytest.approx(0.8, abs=0.01)
    from pruning import get_masks
    model = keras.models.load_model(tmp_path / "pruned" / "model.keras")
    masks = get_masks(model)
    assert masks and all(not model.get_layer(key.split("/")[0]).kernel.numpy()[~mask].any()
                         for key, mask in masks.items())
    assert not (tmp_path / ".pruned.backup").exists()


def test_the_dense_stages_record_reruns_it_to_the_same_weights(pipeline):
    """Its config.json holds all that made its weights: the config alone, with the data it names
    (fingerprint and --quick), trains them again (same machine, same seed)."""
    from datasets import images
    from training.checkpoints import CUSTOM_OBJECTS, load_checkpoint
    from training.fit import train_dense
    saved, upstream = load_checkpoint(pipeline / "dense", "train_network_dense.py",
                                      CUSTOM_OBJECTS)
    config = configs.from_record(configs.DenseConfig(), upstream["record"]["config"])
    data = images.load(sizes=images.sizes(config.quick))
    assert data["sha256"] == config.data_sha256
    model, _, _ = train_dense(config, data, log=lambda *_: None)
    for mine, theirs in zip(model.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def prune_and_deploy_structured(dense, cwd, network, *flags, folders=("p", "s")):
    """prune --structure ... (from `dense`: --dense-dir DENSE) then deploy, in --quick mode, into
    `folders`; (pruned, deployed) config.json."""
    start = ["--dense-dir", str(dense)] if dense else []
    result = run("prune_network.py", "--quick", "--network", network, *flags, *start,
                 "--model-dir", folders[0], cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "shrinks to a dense" in result.stdout or not dense
    result = run("deploy_pruned_model.py", "--quick", "--network", network, "--pruned-dir",
                 folders[0], "--model-dir", folders[1], "--codebook-epochs", "0", cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads((cwd / f / "config.json").read_text()) for f in folders]


def kernel_shapes(path):
    import keras  # noqa: F401 (TensorFlow starts only in the tests that need it)

    import pruning
    model = keras.models.load_model(path)
    return [tuple(l.kernel.shape) for l in pruning.prunable_layers(model)]


def test_structured_pruning_deploys_the_shrunk_network(pipeline, tmp_path):
    pruned, sparse = prune_and_deploy_structured(
        pipeline / "dense", tmp_path, "mlp", "--structure", "inputs", "--criterion",
        "layer-sparsity", "--sparsity", "0.8")
    pixels, h1, h2 = map(int, pruned["results"]["shrunk_sizes"].split("-"))
    assert (pixels, h1, h2) == (round(0.2 * 784), round(0.2 * 512), round(0.2 * 512))
    assert kernel_shapes(tmp_path / "s/shrunk.keras") == [(pixels, h1), (h1, h2), (h2, 10)]
    results = sparse["results"]
    assert results["shrunk_sizes"] == dict(pruned="784-512-512", shrunk=f"{pixels}-{h1}-{h2}")
    assert results["test_accuracy"] == pruned["results"]["test_accuracy"]
    assert results["max_logit_difference"] <= 1e-4
    assert results["tflite"]["model.tflite"]["max_logit_difference"] <= 1e-4
    # the shrunk float32 .tflite against the unpruned one: about the weights' ratio
    weights = pixels * h1 + h1 * h2 + h2 * 10
    assert results["tflite"]["model.tflite"]["compression"] > 0.8 * 668_672 / weights
    assert (tmp_path / "s/saved_model").is_dir() and (tmp_path / "s/model_int8.tflite").is_file()

    # and 1x4 blocks pruned inside the shrunk network (widths 4 does not divide: LiteRT's blocks)
    inside, deployed = prune_and_deploy_structured(
        None, tmp_path, "mlp", "--structured-dir", "p", "--block", "1x4",
        "--criterion", "layer-sparsity", "--sparsity", "0.5", folders=("p2", "s2"))
    assert inside["config"]["shrunk_from"] == str((tmp_path / "p").resolve())
    assert inside["config"]["structure"] == "none"
    import keras

    import pruning
    model = keras.models.load_model(tmp_path / "p2/model.keras")
    for layer in pruning.prunable_layers(model):  # whole 1x4 blocks of exact zeros, about half
        kernel = layer.kernel.numpy()
        assert kernel.shape == {"fc1": (pixels, h1), "fc2": (h1, h2), "fc3": (h2, 10)}[layer.name]
        rows = -(-kernel.shape[0] // 4) * 4
        blocks = np.pad(kernel, [(0, rows - kernel.shape[0]), (0, 0)]).reshape(
            -1, 4, kernel.shape[1])
        zero = ~blocks.any(axis=1)
        assert 0.4 < zero.mean() < 0.6 and np.all((blocks == 0).all(axis=1) == zero)
    inner = deployed["results"]
    assert inner["shrunk_sizes"] == dict(pruned="784-512-512", shrunk=f"{pixels}-{h1}-{h2}")
    assert inner["test_accuracy"] == inside["results"]["test_accuracy"]
    tflite = inner["tflite"]["model.tflite"]
    assert tflite["max_logit_difference"] <= 1e-4
    assert [l["storage"] for l in tflite["layers"]][:2] == ["1x4 blocks"] * 2
    assert inner["formats"]["coo16"]["bytes"] < 0.7 * results["formats"]["coo16"]["bytes"]

    # which deployment to ship: the unstructured one of the pipeline against the shrunk ones
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_deployments", "--dense-dir",
         str(pipeline / "dense"), "--deployed", str(pipeline / "sparse"), str(tmp_path / "s"),
         str(tmp_path / "s2"),
         "--batches", "1", "3", "--repeats", "1", "--results-dir", str(tmp_path / "r"),
         "--pics-dir", str(tmp_path / "pics")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "r").glob("deployments-mlp-*.json").__next__().read_text())
    shrunk = f"shrunk {pixels}-{h1}-{h2}"
    assert sorted(written["deployments"]) == sorted(
        ["dense .tflite", "dense int8 .tflite", "dense TF"] + [
            f"{kind}{runtime}" for kind in ("unstructured", shrunk, f"{shrunk} + 1x4 blocks")
            for runtime in (" .tflite", " int8 .tflite", " SavedModel")])
    row = written["deployments"][f"{shrunk} .tflite"]
    assert row["multiply_adds"] == weights and row["bytes"] == (tmp_path / "s/model.tflite").stat(
        ).st_size
    # one network in two runtimes: the same answers (the benchmark reads all of MNIST's test
    # split, the --quick stages a subset)
    assert row["test_accuracy"] == pytest.approx(
        written["deployments"][f"{shrunk} SavedModel"]["test_accuracy"], abs=1e-3)
    assert written["baseline"] == "dense int8 .tflite"  # the fastest dense file
    baseline = written["deployments"]["dense int8 .tflite"]
    assert baseline["speedup"] == {"1": 1.0, "3": 1.0} and \
        baseline["speedup_range"] == {"1": [1.0, 1.0], "3": [1.0, 1.0]} and \
        written["deployments"]["dense .tflite"]["speedup_vs_float"] == {"1": 1.0, "3": 1.0}
    assert row["speedup_range"]["1"][0] <= row["speedup"]["1"] <= row["speedup_range"]["1"][1]
    assert set(row["latency_s"]) == set(row["useful_gflops"]) == {"1", "3"}
    floor = written["floor"]  # timed beside them, neither scored nor chosen
    assert set(floor["speedup"]) == set(floor["latency_s"]) == {"1", "3"} and \
        "floor" not in written["deployments"] and "the floor (int8 pixels" in result.stdout
    # each file timed on the pixels it reads: the int8 files int8 ones (deploy.litert.convert)
    assert {name: r["input"] for name, r in written["deployments"].items()
            if name.startswith("dense")} == {"dense .tflite": "float32",
                                             "dense int8 .tflite": "int8", "dense TF": "float32"}
    assert written["deployments"][f"{shrunk} int8 .tflite"]["input"] == "int8"
    assert set(written["chosen"]) == {"goal", "fastest", "smallest", "smallest_stored"}
    assert written["stored"][f"{shrunk} coo16"]["bytes"] == results["formats"]["coo16"]["bytes"]
    assert (tmp_path / "pics/deployments.png").stat().st_size > 10_000


@pytest.mark.parametrize("network_pipeline", ["lenet-5"], indirect=True)  # the conv path
def test_structured_units_prune_gradually_and_shrink_lenet5(network_pipeline, tmp_path):
    network, cwd, *_ = network_pipeline
    pruned, sparse = prune_and_deploy_structured(
        cwd / "dense", tmp_path, network, "--structure", "units", "--norm", "l2",
        "--criterion", "layer-sparsity", "--sparsity", "0.5")
    assert pruned["config"]["schedule"] == "gradual"
    kept = [int(n) for n in pruned["results"]["shrunk_sizes"].split("-")]
    full = [20, 50, 800, 500] if network == "lenet-5" else [784, 300, 100]
    # half of every layer's units or filters; the inputs of the first Dense layer follow the
    # filters before it (16 features each), the pixels stay
    half = [n // 2 for n in full]
    expected = [half[0], half[1], half[1] * 16, half[3]] if network == "lenet-5" else \
        [784, *half[1:]]
    assert kept == expected
    assert sparse["results"]["max_logit_difference"] <= 1e-4
    assert sparse["results"]["test_accuracy"] == pruned["results"]["test_accuracy"]


@pytest.mark.parametrize("flags, match", [
    (["--structure", "inputs", "--block", "1x4"], "--structure inputs removes whole groups, "
                                                  "--block 1x4 blocks: choose one"),
    (["--norm", "l2"], "--norm is not used by --structure none"),
    (["--structured-dir", "x", "--structure", "units"], "--structured-dir prunes inside an "
                                                        "already shrunk network, --structure"),
    (["--structured-dir", "x", "--dense-dir", "y"], "--structured-dir and --dense-dir are both"),
    (["--max-accuracy-drop", "0.5", "--criterion", "layer-sparsity", "--sparsity", "0.9"],
     "--max-accuracy-drop searches the sparsity that --sparsity would set"),
    (["--search-steps", "3"], "--search-steps is not used without --max-accuracy-drop"),
    (["--schedule", "variational", "--criterion", "threshold"], "--schedule variational learns "
                                                                "which weights or units to prune"),
    (["--schedule", "variational", "--structure", "units", "--norm", "l2"],
     "--schedule variational learns which weights or units to prune (log alpha > 3, no target): "
     "--norm is not used by it"),
])
def test_structured_flags_that_cannot_run_together_are_one_line(flags, match, monkeypatch,
                                                                tmp_path):
    line = run_script("prune_network.py", "--quick", *flags, "--model-dir", str(tmp_path / "p"),
                      monkeypatch=monkeypatch)
    assert line.startswith(f"error: {match}") and "\n" not in line
    assert not (tmp_path / "p").exists()


def test_prune_searches_the_sparsity_within_an_accuracy_drop(pipeline, tmp_path):
    result = run("prune_network.py", "--quick", "--criterion", "layer-sparsity", "--schedule",
                 "gradual", "--max-accuracy-drop", "100", "--search-steps", "2", "--dense-dir",
                 str(pipeline / "dense"), "--model-dir", "p", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "p/config.json").read_text())
    search = meta["results"]["search"]
    assert [p["within"] for p in search] == [True, True]  # any accuracy is within 100 points
    assert meta["config"]["sparsity"] == search[1]["sparsity"] > search[0]["sparsity"]
    assert "search 2/2" in result.stdout and "chose sparsity" in result.stdout


def test_corrupt_dataset_is_one_line_naming_the_file(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (data / name).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)  # header says 0 images
    line = one_error_line(run("train_network_dense.py", "--quick", "--data-dir", str(data),
                              "--model-dir", "d", cwd=tmp_path))
    assert "train-images-idx3-ubyte" in line
    assert not (tmp_path / "d").exists()


def test_help_and_a_bad_flag(tmp_path, monkeypatch, capsys):
    assert "--threshold" in run("prune_network.py", "--help", cwd=tmp_path).stdout
    assert run_script("train_network_dense.py", "--epochs", "x", monkeypatch=monkeypatch) == 2
    assert capsys.readouterr().err == ("error: argument --epochs: must be an integer >= 1, got "
                                       "'x' (see --help)\n")


def run_stages(cwd, *flags, fresh=False, prune_flags=()):
    """train -> prune -> deploy in --quick mode with `flags` (and `prune_flags` for the second),
    into dense/, pruned/, sparse/ (`fresh`: each in a new interpreter)."""
    for script, args in (("train_network_dense.py", ["--model-dir", "dense"]),
                         ("prune_network.py", ["--dense-dir", "dense", "--model-dir", "pruned",
                                               *prune_flags]),
                         ("deploy_pruned_model.py", ["--pruned-dir", "pruned", "--model-dir",
                                                     "sparse"])):
        result = run(script, "--quick", *flags, *args, cwd=cwd, fresh=fresh)
        assert result.returncode == 0, f"{script} failed:\n{result.stderr[-3000:]}"
    return [json.loads((cwd / stage / "config.json").read_text())
            for stage in ("dense", "pruned", "sparse")]


@pytest.fixture(scope="module", params=["lenet-300-100", "lenet-5"])
def network_pipeline(request, tmp_path_factory):
    cwd = tmp_path_factory.mktemp(request.param)
    return request.param, cwd, *run_stages(cwd, "--network", request.param)


def test_the_papers_networks_run_through_all_three_stages(network_pipeline):
    network, cwd, dense, pruned, sparse = network_pipeline
    assert dense["config"]["network"] == pruned["config"]["network"] == network
    assert pruned["config"]["schedule"] == "gradual"  # the LeNets' recipe
    results = sparse["results"]
    assert results["test_accuracy"] == pruned["results"]["test_accuracy"]
    assert results["max_logit_difference"] <= 1e-4
    assert sum(results["nonzeros"].values()) == pruned["results"]["nonzero_weights"]
    quantization = results["trained_quantization"]
    assert quantization["bits"] == 5 and quantization["epochs"] == 1
    assert quantization["stored"] in ("trained", "k-means")
    report = (cwd / "sparse/compression_report.txt").read_text()
    assert "trained quantization (5-bit codebooks, 1 epochs, codes fixed)" in report
    if network == "lenet-5":
        assert list(results["nonzeros"]) == ["conv1", "conv2", "fc1", "fc2"]
        assert "5x5x20x50" in report


def test_a_stage_refuses_a_checkpoint_of_another_network(network_pipeline, tmp_path):
    network, cwd, *_ = network_pipeline
    line = one_error_line(run("prune_network.py", "--quick", "--dense-dir", str(cwd / "dense"),
                              "--model-dir", str(tmp_path / "p"), cwd=tmp_path))
    assert f"holds a {network} network, not mlp: pass --network {network}" in line
    assert not (tmp_path / "p").exists()


def test_own_data_of_another_size_runs_through_all_three_stages(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (400, 16, 20), np.uint8)
    y = (x[:, :8].mean((1, 2)) > x[:, 8:].mean((1, 2))) + 2 * (x[:, 0, 0] > 127)
    np.savez(tmp_path / "mine.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:],
             y_test=y[300:])
    # per layer: the recipe's global 92% empties conv2 of a network trained for one epoch on
    # this noise, which GradualPruning refuses
    dense, pruned, sparse = run_stages(tmp_path, "--network", "lenet-5", "--dataset", "mine.npz",
                                       prune_flags=("--criterion", "layer-sparsity"))
    assert dense["config"]["image_shape"] == [16, 20] and dense["config"]["num_classes"] == 4
    assert pruned["config"]["image_shape"] == [16, 20]
    assert sparse["results"]["max_logit_difference"] <= 1e-4
    tflite = sparse["results"]["tflite"]
    assert tflite["model.tflite"]["max_logit_difference"] <= 1e-4
    assert tflite["model.tflite"]["test_accuracy"] == pruned["results"]["test_accuracy"]
    assert (tmp_path / "sparse/model.tflite").stat().st_size == tflite["model.tflite"]["bytes"]
    # MNIST with a checkpoint trained on this data: one line, before any work
    line = one_error_line(run("prune_network.py", "--quick", "--network", "lenet-5",
                              "--dense-dir", "dense", "--model-dir", "p2", cwd=tmp_path))
    assert "trained on 16x20 images with 4 classes; this data has 28x28 images" in line
    # Other images of the same size and classes: the checkpoint's data fingerprint says so
    np.savez(tmp_path / "other.npz", x_train=x[100:], y_train=y[100:], x_test=x[:100],
             y_test=y[:100])
    line = one_error_line(run("deploy_pruned_model.py", "--quick", "--network", "lenet-5",
                              "--dataset", "other.npz", "--pruned-dir", "pruned", "--model-dir",
                              "s2", cwd=tmp_path))
    assert (f"{tmp_path}/pruned/ was trained on other data ({tmp_path}/mine.npz, sha256 "
            f"{pruned['config']['data_sha256'][:12]}) than this run's ({tmp_path}/other.npz"
            in line and "--allow-other-data" in line)
    # Pixels of 1e30: the loss overflows; the stage stops and saves nothing
    np.savez(tmp_path / "huge.npz", x_train=x[:300] * np.float32(1e30), y_train=y[:300],
             x_test=x[300:] * np.float32(1e30), y_test=y[300:])
    line = one_error_line(run("train_network_dense.py", "--quick", "--network", "lenet-5",
                              "--dataset", "huge.npz", "--model-dir", "d2", cwd=tmp_path))
    assert "training diverged, nothing is saved" in line and "to 2.55e+32" in line
    assert not (tmp_path / "d2").exists() and not list(tmp_path.glob(".d2.tmp-*"))


def test_the_papers_table_reads_every_seed_and_sits_beside_the_published_rows(network_pipeline,
                                                                              tmp_path):
    network, cwd, *_ = network_pipeline
    for seed in (7, 8):  # two seeds already deployed (--quick): read, not rerun
        for stage in ("dense", "pruned", "sparse"):
            shutil.copytree(cwd / stage, tmp_path / "runs" / str(seed) / stage)
            record = json.loads((cwd / stage / "config.json").read_text())
            record["config"]["seed"] = seed  # as if run with --seed 7 and 8
            (tmp_path / "runs" / str(seed) / stage / "config.json").write_text(json.dumps(record))
    compare = ["compare_with_papers.py", "--network", network, "--seeds", "7", "8", "--points",
               "recipe", "--runs-dir", "runs"]
    line = one_error_line(run(*compare, "--results-dir", "out", cwd=tmp_path))
    assert line.startswith(f"error: {tmp_path}/runs/7/dense/ holds a run of {{'quick': True}}, "
                           f"not of {{'quick': False}}: delete it to rerun")
    result = run(*compare, "--quick", "--results-dir", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    table = (tmp_path / "out/papers_comparison.md").read_text()
    assert "| recipe | 7 |" in table and "| recipe | 8 |" in table and "+- 0.00" in table
    for name, error, measure, reduction in papers.PUBLISHED[network]:
        assert f"| {name} | {error}% at {reduction}x {measure} | " in table
    assert table.count("| <= ") == len(papers.GOALS[network])
    # Each point's rows are kept as it completes: a new checkout (no folders) reads them
    kept = json.loads((tmp_path / "out/papers_comparison_seeds.json").read_text())
    assert kept["network"] == network and set(kept["seeds"]) == {"7", "8"}
    assert kept["seeds"]["8"]["recipe"]["flags"] == papers.POINTS[network]["recipe"]
    shutil.rmtree(tmp_path / "runs")
    result = run(*compare, "--quick", "--results-dir", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("its rows as kept in papers_comparison_seeds.json") == 2
    assert (tmp_path / "out/papers_comparison.md").read_text() == table
    assert not (tmp_path / "runs").exists()  # nothing ran
    if network == "lenet-300-100":  # the same code for both networks: the cheaper reruns
        result = run(*compare[:4], "8", *compare[6:], "--quick", "--fresh", "recipe",  # seed 8
                     "--results-dir", "out", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]  # named fresh: run again, not read
        assert "its rows as kept" not in result.stdout and (tmp_path / "runs/8/dense").is_dir()
    from compare_with_papers import read_seeds  # one of another run, one damaged (an edited
    # one is refused before, as any published file this project did not write as it is)
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps(dict(kept, quick=False)))
    with pytest.raises(CheckpointError, match=r"holds rows of \{'network': '[-\w]+', 'quick': "
                       r"False\}, not of \{'network': '[-\w]+', 'quick': True\}"):
        read_seeds(seeds, network, quick=True)
    del kept["seeds"]["7"]["recipe"]["rows"]["recipe"]["bytes"]
    seeds.write_text(json.dumps(kept))
    with pytest.raises(CheckpointError, match="seeds.json is damaged or unreadable"):
        read_seeds(seeds, network, quick=True)
    line = one_error_line(run("compare_with_papers.py", "--network", network, "--points",
                              "magic", "--runs-dir", "runs", cwd=tmp_path))
    assert line.startswith("error: --points: ['magic'] are not points of")
    line = one_error_line(run("compare_with_papers.py", "--network", network, "--fresh",
                              "magic", "--runs-dir", "runs", cwd=tmp_path))
    assert line.startswith("error: --fresh: ['magic'] are not points of")


def test_points_pruned_from_another_dense_network_of_the_seed_are_named():
    """Seed 125's kept points were pruned from a dense network of 0.83% (trained, interrupted,
    resumed); retrained in a new checkout it has 0.80%: the kept points are named, each once."""
    from compare_with_papers import other_dense
    rows = {"recipe": dict(dense_error=0.83), "recipe, mixed": dict(dense_error=0.83),
            "shifted": dict(dense_error=0.80), "shifted, mixed": dict(dense_error=0.80)}
    assert other_dense(rows, 0.80) == {"recipe": 0.83}
    assert other_dense(rows, 0.83) == {"shifted": 0.80}
    assert other_dense({"recipe": dict(dense_error=0.83)}, 0.83) == {}


def test_a_point_of_its_own_dense_network_prunes_that_one_and_shows_its_error(monkeypatch,
                                                                              tmp_path, capsys):
    """A point of papers.DENSE trains its dense network with its flags into dense-<point> and
    prunes that one; its rows show that network's error, with no warning of another dense
    network; the other points prune the plain one, which must hold a run without the flags.
    Its kept entry names the flags: kept with other ones, it is rerun, not read."""
    import compare_with_papers
    monkeypatch.setitem(papers.DENSE, "lenet-300-100", {"gradual-97": ["--shift", "2"]})
    calls = []

    def run_stage(script, seed, network, out, args, expected=None):
        calls.append((script, out.name, args, expected))
        stored = dict(test_accuracy=0.98, validation_accuracy=0.98, compression=40.0, bytes=1,
                      units=[1])
        return dict(test_accuracy=0.99 if out.name == "dense-gradual-97" else 0.98,
                    history=[dict(val_accuracy=0.98)], nonzero_weights=10,
                    fine_tune_seconds=1.0, unpruned_weights=100,
                    formats={fmt: stored for fmt in compare_with_papers.STORED})
    monkeypatch.setattr(compare_with_papers, "run_stage", run_stage)
    entries = {}
    rows = compare_with_papers.run_seed("lenet-300-100", 7, tmp_path, [], ["recipe", "gradual-97"],
                                        {}, entries.__setitem__)
    dense = [(out, args, expected) for script, out, args, expected in calls
             if script == "train_network_dense.py"]
    assert dense == [("dense", [], {"shift": 0}), ("dense-gradual-97", ["--shift", "2"],
                                                    {"shift": 2})]
    pruned = {out: args[args.index("--dense-dir") + 1] for script, out, args, _ in calls
              if script == "prune_network.py"}
    assert pruned == {"pruned": str(tmp_path / "dense"),
                      "pruned-gradual-97": str(tmp_path / "dense-gradual-97")}
    assert rows["gradual-97"]["dense_error"] == pytest.approx(1.0)
    assert rows["recipe"]["dense_error"] == pytest.approx(2.0)
    assert entries["gradual-97"]["dense"] == ["--shift", "2"] and "dense" not in entries["recipe"]
    assert "warning" not in capsys.readouterr().err
    seeds = tmp_path / "seeds.json"  # as compare_with_papers.py keeps them
    seeds.write_text(json.dumps(dict(network="lenet-300-100", quick=False, seeds={"7": entries})))
    kept = compare_with_papers.read_seeds(seeds, "lenet-300-100", quick=False)["7"]
    calls.clear()  # kept, its folders gone: read with the same flags, rerun with others
    shutil.rmtree(tmp_path)
    compare_with_papers.run_seed("lenet-300-100", 7, tmp_path, [], ["gradual-97"], kept,
                                 entries.__setitem__)
    assert calls == []
    kept["gradual-97"] = dict(kept["gradual-97"], dense=["--shift", "1"])
    compare_with_papers.run_seed("lenet-300-100", 7, tmp_path, [], ["gradual-97"], kept,
                                 entries.__setitem__)
    assert [out for _, out, *_ in calls] == ["dense-gradual-97", "pruned-gradual-97",
                                             "sparse-gradual-97"]


def test_a_dense_record_is_read_only_as_a_run_of_its_moves(tmp_path):
    """The plain dense folder must hold a run on unmoved images: one of --shift 2 is refused in
    one line; a record older than the field (no "shift") ran unmoved, and is read."""
    from compare_with_papers import read_results
    facts = dict(network="lenet-300-100", seed=7, quick=False, data_source="MNIST")
    record = dict(config=facts, results=dict(test_accuracy=0.98))
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert read_results(tmp_path, "train_network_dense.py", dict(facts, shift=0)) == \
        record["results"]
    (tmp_path / "config.json").write_text(json.dumps(dict(record, config=dict(facts, shift=2))))
    with pytest.raises(CheckpointError, match=r"holds a run of \{'shift': 2\}, not of "
                                              r"\{'shift': 0\}: delete it"):
        read_results(tmp_path, "train_network_dense.py", dict(facts, shift=0))


def test_a_quick_comparison_runs_every_point_for_the_stages_quick_epoch():
    from compare_with_papers import smoke
    assert smoke(papers.POINTS["lenet-5"]["variational-200"]) == ["--schedule", "variational"]
    assert smoke(["--epochs", "3", "--sparsity", "0.9", "--lr-values", "1e-3", "-1",
                  "--block", "1x4"]) == ["--sparsity", "0.9", "--block", "1x4"]
    assert smoke(papers.POINTS["lenet-5"]["gradual-97"]) == ["--sparsity", "0.97"]


@pytest.mark.parametrize("network_pipeline", ["lenet-300-100"], indirect=True)
def test_a_compound_point_prunes_again_inside_its_first_runs_shrunk_network(network_pipeline,
                                                                            tmp_path):
    """The compound recipe: variational dropout over input features from the dense network,
    then per weight inside the shrunk one, deployed; its parameter reduction counts the
    unpruned network's weights. A deploy record without them (an older version's) is refused."""
    network, cwd, *_ = network_pipeline
    shutil.copytree(cwd / "dense", tmp_path / "runs/7/dense")
    record = json.loads((cwd / "dense/config.json").read_text())
    record["config"]["seed"] = 7
    (tmp_path / "runs/7/dense/config.json").write_text(json.dumps(record))
    compare = ["compare_with_papers.py", "--quick", "--network", network, "--seeds", "7",
               "--points", "compound", "--runs-dir", "runs", "--results-dir", "out"]
    result = run(*compare, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = tmp_path / "runs/7"
    first, second = (json.loads((runs / f / "config.json").read_text())
                     for f in ("pruned-compound-groups", "pruned-compound"))
    assert first["config"]["structure"] == "inputs" and first["config"]["schedule"] == \
        second["config"]["schedule"] == "variational"
    assert second["config"]["shrunk_from"] == str((runs / "pruned-compound-groups").resolve())
    sparse = json.loads((runs / "sparse-compound/config.json").read_text())["results"]
    assert sparse["unpruned_weights"] == 784 * 300 + 300 * 100 + 100 * 10
    params = sparse["unpruned_weights"] / second["results"]["nonzero_weights"]
    table = (tmp_path / "out/papers_comparison.md").read_text()
    assert "| compound | 7 |" in table and f"| {params:.1f}x |" in table
    del sparse["unpruned_weights"]
    (runs / "sparse-compound/config.json").write_text(json.dumps(dict(
        json.loads((runs / "sparse-compound/config.json").read_text()), results=sparse)))
    line = one_error_line(run(*compare, cwd=tmp_path))
    assert "sparse-compound/config.json was written by an older version of " \
           "deploy_pruned_model.py" in line


def test_the_papers_table_never_reads_another_networks_or_a_damaged_run(pipeline, tmp_path):
    """An MLP run where LeNet-300-100's should be, a point's folder holding another sparsity, a
    damaged record: one line each, nothing written."""
    for stage in ("dense", "pruned", "sparse"):
        shutil.copytree(pipeline / stage, tmp_path / "runs/123" / stage)
    compare = ["compare_with_papers.py", "--quick", "--seeds", "123", "--runs-dir", "runs",
               "--results-dir", "out"]
    line = one_error_line(run(*compare, "--network", "lenet-300-100", "--points", "recipe",
                              cwd=tmp_path))
    assert "runs/123/dense/ holds a run of {'network': 'mlp'}, not of {'network': " \
           "'lenet-300-100'}" in line
    (tmp_path / "runs/123/dense/config.json").write_text('{"config": ')
    line = one_error_line(run(*compare, "--network", "lenet-5", "--points", "recipe",
                              cwd=tmp_path))
    assert "runs/123/dense/config.json is damaged or unreadable" in line
    assert line.endswith("runs/123/dense/, and this script reruns the stage)")
    assert not (tmp_path / "out/papers_comparison.md").exists()


def test_a_point_is_read_only_from_a_run_of_its_flags(pipeline, tmp_path):
    from experiments import papers as published
    for stage, folder in (("dense", "dense"), ("pruned", "pruned-gradual-97")):
        shutil.copytree(pipeline / stage, tmp_path / "runs/123" / folder)
        record = json.loads((pipeline / stage / "config.json").read_text())
        record["config"]["network"] = "lenet-5"  # as if a LeNet-5 run: only the flags differ
        (tmp_path / "runs/123" / folder / "config.json").write_text(json.dumps(record))
    line = one_error_line(run("compare_with_papers.py", "--quick", "--network", "lenet-5",
                              "--seeds", "123", "--points", "gradual-97", "--runs-dir", "runs",
                              "--results-dir", "out", cwd=tmp_path))
    assert published.POINTS["lenet-5"]["gradual-97"] == ["--sparsity", "0.97"]
    assert "pruned-gradual-97/ holds a run of {'sparsity': 0.95}, not of {'sparsity': 0.97}" \
        in line


def test_every_benchmark_runs_by_its_path_as_by_module(tmp_path):
    """`python benchmarks/<name>.py --help` from another folder, as `python -m benchmarks.<name>`:
    in one interpreter (one TensorFlow start), each with the path run's sys.path."""
    benchmarks = sorted(str(p) for p in (REPO / "benchmarks").glob("bench_*.py"))
    each = ("import os, runpy, sys\n"
            "for path in sys.argv[1:]:\n"
            "    sys.argv, sys.path[0] = [path, '--help'], os.path.dirname(path)\n"
            "    try:\n"
            "        runpy.run_path(path, run_name='__main__')\n"
            "    except SystemExit as e:\n"
            "        assert e.code in (0, None), (path, e.code)\n"
            "    print('ran', os.path.basename(path))\n")
    result = subprocess.run([sys.executable, "-c", each, *benchmarks], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("usage: bench_") == len(benchmarks) == 5


def test_the_epoch_benchmark_counts_the_work_and_the_spread():
    """LeNet-5's multiply-adds an image (those the deployment benchmark counts for its dense
    file), and an epoch's median, range and share of the bound from per-round step times."""
    from benchmarks.bench_epochs import EPOCH_STEPS, epoch_times
    from networks.builders import build_network, multiply_adds
    assert multiply_adds(build_network(configs.dense_config("lenet-5"))) == 2_293_000
    times = epoch_times([0.04, 0.05, 0.1], bound_s=0.01)
    assert times["epoch_s"] == pytest.approx(0.05 * EPOCH_STEPS)
    assert times["epoch_s_range"] == pytest.approx([0.04 * EPOCH_STEPS, 0.1 * EPOCH_STEPS])
    assert times["bound_fraction"] == pytest.approx(0.2)


def test_the_deployment_benchmark_refuses_what_it_would_score_as_something_else(
        pipeline, tmp_path, monkeypatch):
    """Before anything is timed: another network's folders, other data than theirs (--dataset),
    and --quick runs over the committed results."""
    bench = ["benchmarks/bench_deployments.py", "--dense-dir", str(pipeline / "dense"),
             "--deployed", str(pipeline / "sparse")]
    line = run_script(*bench, "--network", "lenet-5", "--results-dir", "r", "--pics-dir", "p",
                      cwd=tmp_path, monkeypatch=monkeypatch)
    assert line == (f"error: {pipeline}/dense/ holds a mlp run, not lenet-5: pass --network mlp "
                    f"or folders of lenet-5 runs")
    line = run_script(*bench, "--dataset", "mine.npz", "--results-dir", "r", "--pics-dir", "p",
                      cwd=tmp_path, monkeypatch=monkeypatch)
    assert line == (f"error: {pipeline}/dense/ was trained on MNIST, and this benchmark scores "
                    f"on {tmp_path}/mine.npz: its accuracy would mean nothing; pass the data it "
                    f"was trained on (--dataset, or none for MNIST)")
    line = run_script(*bench, "--results-dir", "r", cwd=tmp_path, monkeypatch=monkeypatch)
    assert line.endswith("is a --quick run: a smoke benchmark never replaces the committed "
                         "results; give --pics-dir (another folder)")
    line = run_script(*bench, "--results-dir", "r", "--pics-dir", str(REPO / "pics/lenet-5"),
                      cwd=tmp_path, monkeypatch=monkeypatch)  # another network's
    assert line.endswith("give --pics-dir (another folder)")
    assert not list(tmp_path.iterdir())
    line = run_script(*bench, "--results-dir", "r", "--pics-dir", "p", "--batches", "1",
                      str(10 ** 11), cwd=tmp_path, monkeypatch=monkeypatch)
    assert line.startswith("error: --batches 100000000000: a batch of 100,000,000,000 images of "
                           "784 pixels needs about ")
    assert not list(tmp_path.iterdir())


def test_killing_the_papers_comparison_lets_its_running_stage_clean_up(tmp_path):
    """SIGTERM to compare_with_papers.py is passed on to the stage it runs, which removes its
    working folder as it would alone (not SIGKILLed, leaving it behind)."""
    compare = subprocess.Popen(
        [sys.executable, str(REPO / "compare_with_papers.py"), "--quick", "--network", "lenet-5",
         "--seeds", "123", "--points", "recipe", "--runs-dir", "runs", "--results-dir", "out"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "runs/123").glob(".dense.tmp-*")):
        assert compare.poll() is None and time.monotonic() < deadline, "the stage never started"
        time.sleep(0.05)
    compare.send_signal(signal.SIGTERM)
    _, err = compare.communicate(timeout=120)
    assert compare.returncode == 143, err[-2000:]
    assert "interrupted (SIGTERM)" in err
    assert not list(tmp_path.rglob("*.tmp-*"))  # and runs/123/, made for it, is gone again
    assert not (tmp_path / "runs").exists()
