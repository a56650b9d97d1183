"""Every flag is checked before any work: each script is run in this process with a bad flag, and
must stop with one line naming the flag and the value before it loads data or claims an output."""
import argparse
import os
import runpy
import signal
import sys
import time
from pathlib import Path

import pytest

import configs
from datasets import images
from tests.conftest import REPO
from tests.helpers import run_script
from training import checkpoints as stage_checkpoints
from utils import cli, files


class WorkStarted(Exception):
    """Raised by the stand-ins of the first steps of real work."""


@pytest.fixture
def no_work(monkeypatch):
    """Make loading data, claiming an output folder or loading a checkpoint fail the test; the
    paths the script asked for are recorded."""
    asked = {}

    def refuse(what):
        def stand_in(path=None, *args, **kwargs):
            asked[what] = path
            asked.update(kwargs.get("inputs") or {})
            raise WorkStarted(what)
        return stand_in

    monkeypatch.setattr(images, "from_flags", refuse("data"))
    monkeypatch.setattr(files, "stage_output", refuse("output"))
    monkeypatch.setattr(files, "lock", refuse("lock"))
    monkeypatch.setattr(stage_checkpoints, "load_checkpoint", refuse("checkpoint"))
    return asked


BAD_FLAGS = [
    ("train_network_dense.py", ["--epochs", "-3"], "argument --epochs: must be an integer >= 1, "
                                                    "got '-3'"),
    ("train_network_dense.py", ["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    ("train_network_dense.py", ["--seed", "-1"], "argument --seed: must be an integer in"),
    ("train_network_dense.py", ["--model-dir", ""], "argument --model-dir: must be a path"),
    ("prune_network.py", ["--rounds", "0"], "argument --rounds: must be an integer >= 1"),
    ("prune_network.py", ["--prune-every", "0"], "argument --prune-every: must be an integer >= 1, "
                                                 "got '0'"),
    ("prune_network.py", ["--sparsity", "1.5"], "argument --sparsity: must be a number in [0, 1), "
                                                "got '1.5'"),
    ("prune_network.py", ["--quality", "-1"], "argument --quality: must be a finite number >= 0"),
    ("prune_network.py", ["--threshold", "nan"], "argument --threshold: must be a finite number"),
    ("prune_network.py", ["--criterion", "random"], "argument --criterion: invalid choice"),
    ("deploy_pruned_model.py", ["--format", "shared-9bit"], "argument --format: format "
                                                            "'shared-9bit': shared-Nbit needs N"),
    ("deploy_pruned_model.py", ["--format", "zip"], "argument --format: unknown format 'zip'"),
    ("deploy_pruned_model.py", ["--calibration-images", "0"], "argument --calibration-images: "
                                                              "must be an integer >= 1"),
    ("prune_network.py", ["--block", "1x0"], "argument --block: block must be OUTPUTSxINPUTS"),
    ("prune_network.py", ["--lr-values", "0.1", "-1"], "argument --lr-values: must be a finite "
                                                       "number > 0"),
    ("deploy_pruned_model.py", ["--codebook-bits", "9"], "argument --codebook-bits: must be an "
                                                         "integer in 1..8, got '9'"),
    ("deploy_pruned_model.py", ["--codebook-epochs", "-1"], "argument --codebook-epochs: must be "
                                                            "an integer >= 0"),
    ("deploy_pruned_model.py", ["--codebook-lr", "0"], "argument --codebook-lr: must be a finite "
                                                       "number > 0"),
    ("train_network_dense.py", ["--network", "lenet-4"], "argument --network: invalid choice"),
    ("prune_network.py", ["--dataset", "x.npz", "--data-dir", "d"], "argument --data-dir: not "
                                                                    "allowed with argument"),
    ("compare_with_papers.py", ["--network", "lenet-5", "--seeds", "-2"], "argument --seeds: "
                                                                          "must be an integer"),
    ("sweep_pruning.py", ["--sparsities", "0.9", "1.5"], "argument --sparsities: must be a number "
                                                         "in [0, 1), got '1.5'"),
    ("sweep_pruning.py", ["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    ("sweep_pruning.py", ["--schedules", "variational"], "argument --schedules: invalid choice: "
                                                         "'variational'"),
    ("benchmarks/bench_inference.py", ["--batches", "0"], "argument --batches: must be an integer"),
    ("benchmarks/bench_inference.py", ["--variants", "sparse"], "argument --variants: invalid "
                                                                "choice"),
    ("benchmarks/bench_training.py", ["--epochs", "0"], "argument --epochs: must be an integer"),
]


@pytest.mark.parametrize("script, args, message", BAD_FLAGS)
def test_a_bad_flag_value_is_one_line_before_any_work(script, args, message, no_work,
                                                      monkeypatch, capsys):
    assert run_script(script, *args, monkeypatch=monkeypatch) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and message in line
    assert not no_work


UNUSED_OR_CONFLICTING = [
    (["--sparsity", "0.9"], "--sparsity is not used by --criterion threshold"),
    (["--criterion", "std", "--threshold", "0.1"], "--threshold is not used by --criterion std"),
    (["--rounds", "2"], "--rounds is not used by --schedule one-shot"),
    (["--schedule", "iterative", "--prune-every", "5"], "--prune-every is not used by --schedule "
                                                        "iterative"),
    (["--schedule", "gradual"], "--schedule gradual ramps up a sparsity: it needs --criterion"),
    (["--schedule", "iterative", "--rounds", "5", "--epochs", "2"], "--rounds must be in [1, "
                                                                    "--epochs 2]"),
    (["--quick", "--pics-dir", str(REPO / "pics")], "--quick never writes the committed"),
    (["--lr-values", "0.1"], "--lr-values needs 2 learning rates (the rate steps down after "
                             "epochs [10]), got 1"),
    (["--criterion", "layer-sparsity", "--allocation", "sensitivity", "--sparsity", "0.998"],
     "--sparsity must be <= 0.995, got 0.998"),  # known before every layer is measured
]


@pytest.mark.parametrize("args, message", UNUSED_OR_CONFLICTING)
def test_a_flag_the_criterion_or_schedule_ignores_is_an_error(args, message, no_work,
                                                              monkeypatch):
    code = run_script("prune_network.py", *args, monkeypatch=monkeypatch)
    assert code.startswith("error: ") and message in code and "\n" not in code
    assert not no_work


@pytest.mark.parametrize("script, args", [
    ("sweep_pruning.py", ["--results-dir", "results"]),
    # another network's committed folders: the MLP's, and a LeNet's from an MLP run
    ("sweep_pruning.py", ["--network", "lenet-300-100", "--results-dir", "results"]),
    ("prune_network.py", ["--network", "lenet-300-100", "--pics-dir", "pics"]),
    ("prune_network.py", ["--pics-dir", "pics/lenet-5/sub"]),
    ("compare_with_papers.py", ["--network", "lenet-300-100", "--results-dir", "results"]),
    ("compare_with_papers.py", ["--network", "lenet-5", "--results-dir",
                                "benchmarks/results"])])
def test_quick_runs_refuse_every_committed_folder(script, args, no_work, monkeypatch):
    args = [str(REPO / a) if a.startswith(("results", "pics", "benchmarks")) else a
            for a in args]
    code = run_script(script, "--quick", *args, monkeypatch=monkeypatch)
    assert "--quick never writes the committed" in code and not no_work


@pytest.mark.parametrize("network", ["mlp", "lenet-5"])
@pytest.mark.parametrize("script, flag, default", [
    ("train_network_dense.py", "output", configs.DenseConfig.model_dir),
    ("prune_network.py", "--dense-dir", configs.DenseConfig.model_dir),
    ("deploy_pruned_model.py", "--pruned-dir", configs.PrunedConfig.model_dir),
])
def test_default_paths_are_the_repos_and_given_ones_the_current_folders(
        script, flag, default, network, no_work, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    option = "--model-dir" if flag == "output" else flag
    if network != "mlp":  # the original's folders for mlp, a folder per network otherwise
        default = f"saved_models/{network}/{Path(default).name}"
    for args, expected in (([], REPO / default), ([option, "mine"], tmp_path / "mine")):
        monkeypatch.setattr("sys.argv", [script, "--quick", "--network", network, *args])  # no lock
        with pytest.raises(WorkStarted):
            runpy.run_path(str(REPO / script), run_name="__main__")
        assert Path(no_work[flag]) == expected


@pytest.mark.parametrize("parse, text", [
    (cli.positive_int, "x"), (cli.positive_int, "1.5"), (cli.fraction, "1"),
    (cli.fraction, "-0.1"), (cli.fraction, "nan"), (cli.non_negative, "inf"),
    (cli.seed, str(2 ** 32)), (cli.path, " ")])
def test_flag_types_reject_out_of_range_values_saying_what_is_allowed(parse, text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"must be .*got {text!r}"):
        parse(text)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_kill_and_a_closed_terminal_remove_the_working_folder(tmp_path, signum, capsys):
    previous = {s: signal.getsignal(s) for s in cli.SIGNALS}

    def main():
        with files.stage_output(tmp_path / "ckpt", "train_network_dense.py") as out:
            (out / "model.keras").write_text("half-written")
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the signal arrives here
            pytest.fail("the run went on after the signal")

    with pytest.raises(SystemExit) as stop:
        cli.run(main)
    assert {s: signal.getsignal(s) for s in cli.SIGNALS} == previous  # put back
    name = signal.Signals(signum).name
    assert stop.value.code == 128 + signum
    assert capsys.readouterr().err == (f"interrupted ({name}): the previous output, if any, is "
                                       f"left as it was\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ckpt.lock"]


def test_a_second_ctrl_c_does_not_stop_the_first_ones_clean_up(tmp_path, capsys):
    class CleanUp:
        def __enter__(self):
            return self

        def __exit__(self, *error):
            os.kill(os.getpid(), signal.SIGINT)  # pressed again while cleaning up
            time.sleep(0.2)
            (tmp_path / "cleaned").write_text("")

    def main():
        with CleanUp():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
            pytest.fail("the run went on after Ctrl-C")

    with pytest.raises(SystemExit) as stop:
        cli.run(main)
    assert stop.value.code == 130 and (tmp_path / "cleaned").exists()
    assert capsys.readouterr().err.count("\n") == 1


def test_ctrl_c_inside_a_destructor_still_ends_the_run_with_one_line(capsys):
    """Python drops an exception raised in a destructor, printing "Exception ignored in": a
    Ctrl-C that lands there is raised again where the run is."""
    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the signal arrives here, inside __del__

    def main():
        Finalised()
        time.sleep(5)
        pytest.fail("the run went on after Ctrl-C")

    hook = sys.unraisablehook
    with pytest.raises(SystemExit) as stop:
        cli.run(main)
    assert stop.value.code == 130 and sys.unraisablehook is hook
    assert capsys.readouterr().err == ("interrupted (SIGINT): the previous output, if any, is "
                                       "left as it was\n")


@pytest.mark.parametrize("script, flag, name", [
    ("prune_network.py", "--pics-dir", "weights_distribution_after_pruning.png"),
    ("sweep_pruning.py", "--results-dir", "sweep_pruning.csv"),
    ("sweep_pruning.py", "--pics-dir", "layer_sensitivity.png"),
    ("compare_with_papers.py", "--results-dir", "papers_comparison.md")])
def test_a_users_file_where_a_stage_publishes_is_refused_before_any_work(
        tmp_path, script, flag, name, no_work, monkeypatch):
    (tmp_path / name).write_text("mine")
    args = ["--network", "lenet-5"] if script == "compare_with_papers.py" else []
    if script == "prune_network.py":  # gradual has no after-pruning plot: it removed the file
        args = ["--schedule", "gradual", "--criterion", "global-sparsity"]
    code = run_script(script, *args, flag, str(tmp_path), monkeypatch=monkeypatch)
    assert code == (f"error: {flag} {tmp_path}: {name}: not written by this project (or changed "
                    f"since): refusing to replace or remove what is yours; move it or choose "
                    f"another {flag}")
    assert not no_work and (tmp_path / name).read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("script, flag", [
    ("prune_network.py", "--pics-dir"), ("sweep_pruning.py", "--results-dir"),
    ("sweep_pruning.py", "--pics-dir"), ("compare_with_papers.py", "--results-dir")])
@pytest.mark.parametrize("inside", [False, True])
def test_nothing_is_published_into_a_checkpoint_before_any_work(tmp_path, script, flag, inside,
                                                                  no_work, monkeypatch):
    """A --pics-dir or --results-dir that is a stage's checkpoint folder (the run's own input,
    say) or lies inside one is refused before the work, and the checkpoint is left as it was."""
    (tmp_path / "dense").mkdir()
    (tmp_path / "dense" / "stage.json").write_text('{"stage": "train_network_dense.py", '
                                                   '"files": []}')
    dest = tmp_path / "dense" / "plots" if inside else tmp_path / "dense"
    args = ["--network", "lenet-5"] if script == "compare_with_papers.py" else []
    code = run_script(script, *args, flag, str(dest), monkeypatch=monkeypatch)
    assert code == (f"error: {flag} {dest} {'lies inside' if inside else 'is'} the checkpoint "
                    f"{tmp_path}/dense/ of train_network_dense.py: its files are that stage's; "
                    f"choose another {flag}")
    assert not no_work and sorted(p.name for p in (tmp_path / "dense").iterdir()) == ["stage.json"]


def test_plots_into_the_stages_own_output_are_refused_before_any_work(tmp_path, no_work,
                                                                      monkeypatch):
    """--pics-dir inside a --model-dir that does not exist yet: refused, nothing made."""
    code = run_script("prune_network.py", "--model-dir", str(tmp_path / "ckpt"), "--pics-dir",
                      str(tmp_path / "ckpt" / "pics"), monkeypatch=monkeypatch)
    assert code == (f"error: --pics-dir {tmp_path}/ckpt/pics lies in --model-dir {tmp_path}/ckpt, "
                    f"which the stage replaces whole: choose a folder outside it")
    assert not no_work and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["1x4", "1x16", " 2x8 ", "0x4", "1x", "4", "axb", "1x4x2"])
def test_the_block_flag_reads_blocks_as_the_package_does(text):
    from pruning import criteria
    try:
        expected = criteria.parse_block(text)
    except ValueError as e:
        with pytest.raises(argparse.ArgumentTypeError, match=str(e).split(",")[0]):
            cli.block(text)
    else:
        assert cli.block(text) == expected


def test_a_new_pruning_setting_is_one_entry(monkeypatch, capsys, no_work, tmp_path):
    """One entry in configs.PRUNING gives the config its field, --help and parsing its flag, the
    checks its `used_by`, and the record (config.json, every field) its value."""
    import json

    import prune_network
    from training.checkpoints import record
    from utils import flags
    from utils.files import write_json
    monkeypatch.setitem(configs.PRUNING, "warm_rounds", configs.Setting(
        2, "iterative: rounds before the first pruning", "positive_int",
        used_by=("schedule", ("iterative",))))
    monkeypatch.setattr(configs, "PrunedConfig", configs.pruned_class(configs.PRUNING))
    assert configs.pruned_config("lenet-5").warm_rounds == 2
    monkeypatch.setattr("sys.argv", ["prune_network.py", "--help"])
    with pytest.raises(SystemExit):
        prune_network.parse()
    assert "--warm-rounds WARM_ROUNDS" in capsys.readouterr().out
    monkeypatch.setattr("sys.argv", ["prune_network.py", "--schedule", "iterative",
                                     "--warm-rounds", "4"])
    _, config = prune_network.parse()
    assert config.warm_rounds == 4
    write_json(tmp_path / "config.json", record(config))
    assert json.loads((tmp_path / "config.json").read_text())["config"]["warm_rounds"] == 4
    monkeypatch.setattr("sys.argv", ["prune_network.py", "--warm-rounds", "0"])
    with pytest.raises(SystemExit):  # its type: an integer >= 1
        prune_network.parse()
    assert "argument --warm-rounds: must be an integer >= 1, got '0'" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["prune_network.py", "--warm-rounds", "4"])
    with pytest.raises(ValueError, match="--warm-rounds is not used by --schedule one-shot "
                                         r"\(only by --schedule iterative\)"):
        prune_network.parse()
    assert flags.given(argparse.Namespace(warm_rounds=4), configs.PRUNING) == {"warm_rounds"}


def test_a_new_deployment_setting_is_one_entry(monkeypatch, capsys):
    """Likewise for stage 3's configs.DEPLOYMENT, with a flag named apart from its field."""
    import deploy_pruned_model
    monkeypatch.setitem(configs.DEPLOYMENT, "int8_activations", configs.Setting(
        8, "bits of the int8 file's activations", "bits", flag="--act-bits"))
    monkeypatch.setattr(configs, "SparseConfig", configs.sparse_class(configs.DEPLOYMENT))
    monkeypatch.setattr("sys.argv", ["deploy_pruned_model.py", "--help"])
    with pytest.raises(SystemExit):
        deploy_pruned_model.parse()
    assert "--act-bits ACT_BITS" in capsys.readouterr().out
    for argv, expected in ((["--act-bits", "4"], 4), ([], 8)):
        monkeypatch.setattr("sys.argv", ["deploy_pruned_model.py", *argv])
        _, config = deploy_pruned_model.parse()
        assert config.int8_activations == expected
    monkeypatch.setattr("sys.argv", ["deploy_pruned_model.py", "--act-bits", "9"])
    with pytest.raises(SystemExit):
        deploy_pruned_model.parse()
    assert "argument --act-bits: must be an integer in 1..8, got '9'" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["deploy_pruned_model.py", "--quick", "--codebook-lr", "0.5"])
    _, config = deploy_pruned_model.parse()  # --quick's epochs, unless given
    assert (config.codebook_epochs, config.codebook_learning_rate) == (configs.QUICK["epochs"], 0.5)


def test_tensorflows_out_of_space_error_is_one_line_and_other_errors_stay_tracebacks():
    """A full disk while TensorFlow writes a SavedModel is its ResourceExhaustedError, no OSError:
    one line too; any other unexpected exception still shows where it came from."""
    class ResourceExhaustedError(Exception):  # TensorFlow's, by name
        pass

    def full_disk():
        raise ResourceExhaustedError("out/saved_model/variables/variables.data-00000-of-00001; "
                                     "No space left on device\n\tmore lines")

    with pytest.raises(SystemExit) as stopped:
        cli.run(full_disk)
    assert stopped.value.code == ("error: out of disk space or memory: out/saved_model/"
                                  "variables/variables.data-00000-of-00001; No space left on "
                                  "device; the previous output, if any, is left as it was")
    with pytest.raises(KeyError):
        cli.run(lambda: {}["a bug"])
