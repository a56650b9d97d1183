import numpy as np
import pytest

from tests.helpers import TINY, tiny_data, tiny_model
from utils.checkpoints import CheckpointError, atomic_directory, load_checkpoint, save_checkpoint
from utils.pruning import compute_masks
from utils.training import fit


def test_save_load_round_trip_keeps_weights_momentum_masks_and_config(tmp_path):
    model, optimizer = tiny_model()
    fit(model, optimizer, TINY, tiny_data(), log=lambda *_: None)
    masks = compute_masks(model, "threshold", 0.1)
    save_checkpoint(tmp_path / "ckpt", model, optimizer, TINY, results={"acc": 0.5}, masks=masks)

    loaded, loaded_masks, meta = load_checkpoint(tmp_path / "ckpt", made_by="x.py")
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(optimizer.momentums, loaded.optimizer.momentums):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded_masks.keys() == masks.keys()
    for path in masks:
        np.testing.assert_array_equal(loaded_masks[path], masks[path])
    assert meta["config"]["hidden_sizes"] == [16, 8] and meta["results"] == {"acc": 0.5}
    x = tiny_data()["test"][0]
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_missing_checkpoint_names_the_script_to_run(tmp_path):
    with pytest.raises(CheckpointError, match="run train_network_dense.py first"):
        load_checkpoint(tmp_path / "nothing", made_by="train_network_dense.py")


def test_interrupted_write_leaves_the_previous_directory(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "model.keras").write_text("first")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target) as tmp:
            (tmp / "model.keras").write_text("half-writ")
            raise KeyboardInterrupt
    assert (target / "model.keras").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
