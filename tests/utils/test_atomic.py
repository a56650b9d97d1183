import pytest

from utils.atomic import check_publishable, publish, replacing


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
    from utils.checkpoints import stage_output
    with stage_output(tmp_path / "dense", "train_network_dense.py") as out:
        (out / "model.keras").write_bytes(b"weights")
    before = sorted(p.name for p in (tmp_path / "dense").iterdir())
    for dest, where in ((tmp_path / "dense", "is"), (tmp_path / "dense/plots", "lies inside")):
        with pytest.raises(ValueError, match=rf"--pics-dir {dest} {where} the checkpoint "
                                             rf"{tmp_path}/dense/ of train_network_dense.py"):
            check_publishable(["a.png"], dest, "--pics-dir")
    assert sorted(p.name for p in (tmp_path / "dense").iterdir()) == before
