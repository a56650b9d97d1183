import pytest

from utils.atomic import replacing


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
