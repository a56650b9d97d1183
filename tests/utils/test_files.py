"""Checkpoint folders: round trips, and the rules that keep a user's files safe
(docs/when-things-go-wrong.md): a stage replaces only its own output, one run at a time,
atomically, and a damaged or mismatched checkpoint is one clear error."""
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from pruning import get_masks, prune_low_magnitude
from tests.helpers import TINY, tiny_data, tiny_model, write_checkpoint
from training.checkpoints import load_checkpoint, save_checkpoint
from training.fit import fit
from utils.errors import CheckpointError
from utils import files
from utils.files import (backup, check_publishable, lock, publish, published, replacing,
                         stage_output)

STAGE = "train_network_dense.py"


def write_tiny(path):
    model, optimizer = tiny_model()
    write_checkpoint(path, STAGE, model, optimizer)


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_save_load_round_trip_keeps_weights_momentum_masks_and_config(tmp_path):
    model, optimizer = tiny_model()
    fit(model, optimizer, TINY, tiny_data(), log=lambda *_: None)
    masks = get_masks(prune_low_magnitude(model, "threshold", 0.1))
    with stage_output(tmp_path / "ckpt", STAGE) as out:
        save_checkpoint(out, model, optimizer, TINY, results={"acc": 0.5})

    loaded, upstream = load_checkpoint(tmp_path / "ckpt", made_by=STAGE)
    meta = upstream["record"]
    loaded_masks = get_masks(loaded)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(optimizer.momentums, loaded.optimizer.momentums):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded_masks.keys() == masks.keys()
    for name in masks:
        np.testing.assert_array_equal(loaded_masks[name], masks[name])
    assert meta["config"]["hidden_sizes"] == [16, 8] and meta["results"] == {"acc": 0.5}
    x = tiny_data()["test"][0]
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_missing_checkpoint_names_the_script_to_run(tmp_path):
    with pytest.raises(CheckpointError, match="run train_network_dense.py first"):
        load_checkpoint(tmp_path / "nothing", made_by="train_network_dense.py")


def test_interrupted_write_leaves_the_previous_folder(tmp_path):
    target = tmp_path / "ckpt"
    with stage_output(target, STAGE) as out:
        (out / "model.keras").write_text("first")
    with pytest.raises(KeyboardInterrupt):
        with stage_output(target, STAGE) as out:
            (out / "model.keras").write_text("half-writ")
            raise KeyboardInterrupt
    assert (target / "model.keras").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ckpt.lock", "ckpt"]


@pytest.mark.parametrize("moment", ["mkdir", "write_json"])
def test_ctrl_c_as_the_working_folder_is_made_leaves_nothing_behind(tmp_path, monkeypatch, moment):
    """A signal the moment the working folder exists (as a user who waits for it to appear and
    then presses Ctrl-C, or a parent run that passes its SIGTERM on): as the call that made it
    returns, or while its stage.json is written. CI met the second."""
    owner = os if moment == "mkdir" else files
    real = getattr(owner, moment)

    def interrupted(*args, **kwargs):
        made = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # Python's handler: KeyboardInterrupt
        return made
    monkeypatch.setattr(owner, moment, interrupted)
    # Python's own handler, whatever this process inherited: a shell starts a background job
    # (`cmd &`, as run_tests.sh's second lane) with SIGINT ignored
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with stage_output(tmp_path / "ckpt", STAGE):
                pytest.fail("the block ran")
    finally:
        signal.signal(signal.SIGINT, handler)
    assert [p.name for p in tmp_path.iterdir()] == [".ckpt.lock"]


def test_a_checkpoint_folder_has_the_umasks_permissions_not_a_private_temporary_folders(
        tmp_path):
    mask = os.umask(0o022)
    try:
        with stage_output(tmp_path / "ckpt", STAGE) as out:
            (out / "model.keras").write_text("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755


def test_a_stage_replaces_its_own_output_and_writes_into_new_or_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    for name in ("new", "empty", "new"):  # the second "new" replaces the first
        with stage_output(tmp_path / name, STAGE) as out:
            (out / "model.keras").write_text(name)
        assert (tmp_path / name / "model.keras").read_text() == name


@pytest.mark.parametrize("case", ["users folder", "file", "other stage", "two checkpoints"])
def test_anything_else_is_refused_before_the_block_runs_and_left_intact(tmp_path, case):
    target = tmp_path / "out"
    if case == "users folder":
        target.mkdir()
        (target / "thesis.tex").write_text("years of work")
    elif case == "file":
        target.write_text("a file")
    elif case == "other stage":
        with stage_output(target, "prune_network.py") as out:
            (out / "model.keras").write_text("pruned")
    else:
        for name in ("a", "b"):
            with stage_output(target / name, STAGE) as out:
                (out / "model.keras").write_text(name)
    before = snapshot(tmp_path)
    ran = []
    with pytest.raises(CheckpointError, match="refusing to replace it"):
        with stage_output(target, STAGE):
            ran.append(True)
    assert not ran and snapshot(tmp_path) == before


@pytest.mark.parametrize("output", ["in", "in/sub", "."])
def test_a_stage_never_writes_over_or_inside_its_input(tmp_path, output):
    write_tiny(tmp_path / "in")
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="input|inside the checkpoint"):
        with stage_output(tmp_path / output, "prune_network.py",
                          inputs={"--dense-dir": tmp_path / "in"}):
            pass
    assert snapshot(tmp_path) == before


def test_an_unwritable_output_fails_before_the_block_runs(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file" / "ckpt", "/proc/no-such-dir/ckpt"):
        with pytest.raises(CheckpointError, match="file, not a folder|cannot write"):
            with stage_output(bad, STAGE):
                pytest.fail("the block must not run")


def test_a_second_writer_is_refused_and_the_first_finishes(tmp_path):
    target = tmp_path / "ckpt"
    with stage_output(target, STAGE) as out:
        with pytest.raises(CheckpointError, match="another run is writing"):
            with stage_output(target, STAGE):
                pytest.fail("the second run must not start")
        (out / "model.keras").write_text("first")
    assert (target / "model.keras").read_text() == "first"
    with lock(target):  # released when the first run ended
        pass


def test_leftovers_of_a_killed_run_are_removed_but_nobody_elses(tmp_path):
    write_tiny(tmp_path / "ckpt")
    killed = tmp_path / ".ckpt.tmp-abc"  # what a SIGKILLed run leaves: its stage.json inside
    killed.mkdir()
    (killed / "stage.json").write_text(json.dumps({"stage": STAGE}))
    users = tmp_path / ".ckpt.tmp-mine"
    users.mkdir()
    with stage_output(tmp_path / "ckpt", STAGE):
        pass
    assert not killed.exists() and users.exists()


@pytest.mark.parametrize("damage", ["overwrite", "truncate", "json", "stage"])
def test_a_damaged_file_is_one_error_naming_it_and_the_script(tmp_path, damage):
    write_tiny(tmp_path / "ckpt")
    file = {"overwrite": "model.keras", "truncate": "model.keras", "json": "config.json",
            "stage": "stage.json"}[damage]
    path = tmp_path / "ckpt" / file
    data = bytearray(path.read_bytes())
    if damage == "overwrite":
        data[len(data) // 3: len(data) // 3 + 4096] = b"\xff" * 4096
    else:
        data = data[:len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{file} is damaged or unreadable .*: rerun {STAGE}"):
        load_checkpoint(tmp_path / "ckpt", made_by=STAGE)


def test_a_checkpoint_of_another_stage_is_refused_naming_both(tmp_path):
    write_tiny(tmp_path / "dense")
    with pytest.raises(CheckpointError, match=f"holds a checkpoint of {STAGE}, not the one of "
                                              f"prune_network.py"):
        load_checkpoint(tmp_path / "dense", made_by="prune_network.py")


@pytest.mark.parametrize("foreign", ["NOTES.txt", "my_eval/results.csv", "my_empty_folder/"])
def test_a_users_file_inside_a_checkpoint_is_never_deleted(tmp_path, foreign):
    target = tmp_path / "ckpt"
    write_tiny(target)
    path = target / foreign.rstrip("/")
    if foreign.endswith("/"):
        path.mkdir()
    else:
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=f"did not write \\({foreign.split('/')[0]}"):
        with stage_output(target, STAGE):
            pytest.fail("the block must not run")
    assert snapshot(tmp_path) == before and path.exists()


def test_a_users_file_that_appears_during_the_run_keeps_both(tmp_path):
    target = tmp_path / "ckpt"
    write_tiny(target)
    with pytest.raises(CheckpointError, match="this run's output is kept in .*ckpt-1"):
        with stage_output(target, STAGE) as out:
            (out / "model.keras").write_text("25 epochs")
            (target / "NOTES.txt").write_text("mine")
    assert (target / "NOTES.txt").read_text() == "mine"
    assert (tmp_path / "ckpt-1" / "model.keras").read_text() == "25 epochs"


def test_a_read_only_checkpoint_is_refused_before_the_work(tmp_path, monkeypatch):
    import utils.files as files
    target = tmp_path / "ckpt"
    write_tiny(target)
    # Root may write anywhere, so emulate a user without write access to the folder.
    access = files.os.access
    monkeypatch.setattr(files.os, "access",
                        lambda p, mode: Path(p) != target and access(p, mode))
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=f"ckpt/ is read-only \\({target}\\).*chmod -R u\\+w"):
        with stage_output(target, STAGE):
            pytest.fail("the block must not run")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["new", ".new"])  # a hidden folder's lock is found too
def test_a_run_inside_a_folder_another_run_is_writing_is_refused(tmp_path, name):
    with stage_output(tmp_path / name, STAGE) as out:
        with pytest.raises(CheckpointError, match="another run is writing .*new, which"):
            with stage_output(tmp_path / name / "sub", "prune_network.py"):
                pytest.fail("the nested run must not start")
        (out / "model.keras").write_text("25 epochs")
    assert (tmp_path / name / "model.keras").read_text() == "25 epochs"


def test_a_damaged_file_list_makes_the_files_foreign_not_a_traceback(tmp_path):
    write_tiny(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "stage.json").write_text(json.dumps({"stage": STAGE, "files": [["a"]]}))
    with pytest.raises(CheckpointError, match="also holds what it did not write"):
        with stage_output(tmp_path / "ckpt", STAGE):
            pytest.fail("the block must not run")


def test_a_working_folder_left_half_made_is_removed(tmp_path):
    write_tiny(tmp_path / "ckpt")
    half = tmp_path / ".ckpt.tmp-full"  # a full disk while stage.json was written
    half.mkdir()
    (half / "stage.json").write_text("")
    with stage_output(tmp_path / "ckpt", STAGE):
        pass
    assert not half.exists()


def test_a_full_disk_during_the_work_names_the_output_and_leaves_it_as_it_was(tmp_path):
    """A write that fails with ENOSPC often names no file ("[Errno 28] No space left on
    device"): the error names the output folder."""
    write_tiny(tmp_path / "ckpt")
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=f"--model-dir {tmp_path}/ckpt: out of disk space "
                                              f"\\(No space left on device\\) writing into "
                                              f"{tmp_path}: the previous"):
        with stage_output(tmp_path / "ckpt", STAGE):
            raise OSError(28, "No space left on device")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"),
                                   OSError(27, "File too large"), OSError("no errno")])
def test_any_write_error_that_names_no_file_names_the_output(tmp_path, error):
    with pytest.raises(CheckpointError, match=f"--model-dir {tmp_path}/ckpt: "
                                              f"{error.strerror or error} writing into"):
        with stage_output(tmp_path / "ckpt", STAGE):
            raise error
    with pytest.raises(CheckpointError, match=f"{error.strerror or error} writing --pics-dir "
                                              f"{tmp_path}/pics"):
        with published({"--pics-dir": (tmp_path / "pics", ["a.png"])}, "sweep"):
            raise error
    with pytest.raises(PermissionError):  # an error that names its file is left as it is
        with stage_output(tmp_path / "ckpt", STAGE):
            raise PermissionError(13, "Permission denied", str(tmp_path / "x"))


def test_a_full_disk_while_making_the_working_folder_leaves_nothing(tmp_path, monkeypatch):
    import utils.files as files

    def full(path, obj):
        Path(path).write_text("")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "write_json", full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        with stage_output(tmp_path / "ckpt", STAGE):
            pytest.fail("the block must not run")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ckpt.lock"]


def test_a_checkpoint_that_lists_no_files_is_not_replaced(tmp_path):
    target = tmp_path / "ckpt"
    write_tiny(target)
    (target / "stage.json").write_text(json.dumps({"stage": STAGE}))  # as older versions wrote
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="older version of .* did not list its files"):
        with stage_output(target, STAGE):
            pytest.fail("the block must not run")
    assert snapshot(tmp_path) == before


# Shared folders and single files

def test_a_finished_write_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "results.json"
    for text in ("old", "new"):
        with replacing(path) as tmp:
            assert tmp.suffix == ".json" and tmp.parent == path.parent
            tmp.write_text(text)
    assert path.read_text() == "new" and [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "plot.png"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def write_plots(folder, names, text="plot"):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text(f"{text} {name}")


def test_publish_replaces_and_removes_only_its_own_files(tmp_path):
    run1, run2, dest = tmp_path / "run1", tmp_path / "run2", tmp_path / "pics"
    write_plots(run1, ["before.png", "after.png"], "one-shot")
    publish(["before.png", "after.png"], run1, dest, "--pics-dir")
    write_plots(run2, ["before.png"], "gradual")  # a gradual prune has no "after pruning" plot
    publish(["before.png", "after.png"], run2, dest, "--pics-dir")
    assert (dest / "before.png").read_text() == "gradual before.png"
    assert not (dest / "after.png").exists()  # this project's, from run 1: the set is one run's


@pytest.mark.parametrize("users", ["own file", "changed plot"])
def test_a_users_file_under_a_published_name_is_refused_before_the_work(tmp_path, users):
    run, dest = tmp_path / "run", tmp_path / "pics"
    write_plots(run, ["before.png"])
    if users == "changed plot":
        publish(["before.png", "after.png"], run, dest, "--pics-dir")
        (dest / "before.png").write_text("edited by hand")
    write_plots(dest, ["after.png"] if users == "own file" else [], "mine")
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    name = "after.png" if users == "own file" else "before.png"
    for attempt in (check_publishable, lambda *a: publish(a[0], run, *a[1:])):
        with pytest.raises(ValueError, match=f"--pics-dir {dest}: {name}: not written by this "
                                             f"project"):
            attempt(["before.png", "after.png"], dest, "--pics-dir")
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before


def test_nothing_is_published_into_a_checkpoint_folder(tmp_path):
    """A --pics-dir pointed at a stage's folder (the run's own input, say), or inside one, is
    refused before the work: its stage.json lists its files, and they stay the stage's."""
    with stage_output(tmp_path / "dense", "train_network_dense.py") as out:
        (out / "model.keras").write_bytes(b"weights")
    before = sorted(p.name for p in (tmp_path / "dense").iterdir())
    for dest, where in ((tmp_path / "dense", "is"), (tmp_path / "dense/plots", "lies inside")):
        with pytest.raises(ValueError, match=rf"--pics-dir {dest} {where} the checkpoint "
                                             rf"{tmp_path}/dense/ of train_network_dense.py"):
            check_publishable(["a.png"], dest, "--pics-dir")
    assert sorted(p.name for p in (tmp_path / "dense").iterdir()) == before


# A stage's training backup

def test_a_backup_is_kept_on_interruption_and_removed_when_the_run_ends(tmp_path):
    folder = tmp_path / ".ckpt.backup"
    with pytest.raises(KeyboardInterrupt):
        with backup(tmp_path / "ckpt", STAGE, {"epochs": 3}) as kept:
            (kept / "latest.weights.h5").write_text("epoch 2")
            raise KeyboardInterrupt
    assert (folder / "latest.weights.h5").read_text() == "epoch 2"
    with backup(tmp_path / "ckpt", STAGE, {"epochs": 3}) as again:  # the same settings: resumes
        assert again == folder and (again / "latest.weights.h5").read_text() == "epoch 2"
    assert not folder.exists()


@pytest.mark.parametrize("error", [ValueError("diverged"), CheckpointError("bad input")])
def test_a_backup_is_removed_by_an_error_a_rerun_would_meet_again(tmp_path, error):
    with pytest.raises(type(error)):
        with backup(tmp_path / "ckpt", STAGE, {"epochs": 3}) as kept:
            (kept / "latest.weights.h5").write_text("nan")
            raise error
    assert list(tmp_path.iterdir()) == []


def test_a_backup_of_other_settings_and_a_users_folder_are_refused_a_half_made_one_removed(
        tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with backup(tmp_path / "ckpt", STAGE, {"epochs": 3}) as kept:
            (kept / "latest.weights.h5").write_text("epoch 2")
            raise KeyboardInterrupt
    with pytest.raises(CheckpointError, match="holds the training of an interrupted run of "
                                              ".* with other settings: rerun that command"):
        with backup(tmp_path / "ckpt", STAGE, {"epochs": 4}):
            pytest.fail("the block must not run")
    assert (tmp_path / ".ckpt.backup" / "latest.weights.h5").read_text() == "epoch 2"
    (tmp_path / ".ckpt.backup" / "backup.json").unlink()  # as a run killed making it leaves it
    with backup(tmp_path / "ckpt", STAGE, {"epochs": 4}) as fresh:
        assert not (fresh / "latest.weights.h5").exists()
    mine = tmp_path / ".other.backup"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="is not a training backup of .*: refusing"):
        with backup(tmp_path / "other", STAGE, {"epochs": 3}):
            pytest.fail("the block must not run")
    assert (mine / "notes.txt").read_text() == "mine"


def test_a_linked_record_is_locked_where_it_is_read_and_names_stay_plain(tmp_path):
    """The record's lock lies in the published folder even when the record is a link (else two
    writers could hold two locks and lose an entry); names with folders and the lock's own name
    as a writer are refused."""
    run, dest, other = tmp_path / "run", tmp_path / "pics", tmp_path / "other"
    write_plots(run, ["a.png"])
    dest.mkdir()
    other.mkdir()
    (other / "m.json").write_text("{}")
    (dest / ".written-by-pruning.json").symlink_to(other / "m.json")
    publish(["a.png"], run, dest, "--pics-dir")
    assert (dest / ".written-by-pruning.json.lock").exists()
    assert sorted(p.name for p in other.iterdir()) == ["m.json"]
    for names in (["../a.png"], ["sub/a.png"], [".written-by-pruning.json"]):
        with pytest.raises(ValueError, match="a published name is a plain file name"):
            check_publishable(names, dest, "--pics-dir")
    with pytest.raises(ValueError, match="names the lock of the record"):
        with published({"--pics-dir": (dest, ["a.png"])}, "written-by-pruning.json"):
            pytest.fail("the block must not run")


def test_a_refused_publication_leaves_no_folder_or_lock_behind(tmp_path):
    """published() into two folders, the second busy: refused at once, and the first, made
    for it, is gone again with its lock."""
    with lock(tmp_path / "busy" / "sweep", "--pics-dir"):
        with pytest.raises(CheckpointError, match="another run is writing"):
            with published({"--results-dir": (tmp_path / "new" / "results", ["a.csv"]),
                            "--pics-dir": (tmp_path / "busy", ["a.png"])}, "sweep"):
                pytest.fail("the block must not run")
    assert not (tmp_path / "new").exists()


def test_a_full_disk_while_publishing_names_where_the_files_were_going(tmp_path):
    with pytest.raises(CheckpointError, match=f"out of disk space \\(No space left on device"
                                              f"\\) writing --pics-dir {tmp_path}/pics \\(or "
                                              f"the temporary folder in .*\\); nothing"):
        with published({"--pics-dir": (tmp_path / "pics", ["a.png"])}, "sweep"):
            raise OSError(28, "No space left on device")
    assert not (tmp_path / "pics").exists()
