import keras
import pytest

import configs
from tests.helpers import TINY, tiny_data, tiny_model
from pruning import criteria
from training.recipes import prune_and_fine_tune, round_value

BASE = configs.override(configs.PrunedConfig(), image_shape=TINY.image_shape,
                        hidden_sizes=TINY.hidden_sizes, num_classes=TINY.num_classes,
                        batch_size=10, epochs=3, criterion="global-sparsity", sparsity=0.8,
                        lr_values=(0.05,), lr_boundaries=())


def run(**changes):
    model, _ = tiny_model(configs.override(BASE, **changes))
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    pruned = []
    masks, history = prune_and_fine_tune(
        model, optimizer, configs.override(BASE, **changes), tiny_data(),
        on_prune=lambda r, m: pruned.append((r, m)), log=lambda *_: None)
    return masks, history, pruned


def kept(masks):
    return sum(m.sum() for m in masks.values()) / sum(m.size for m in masks.values())


def test_iterative_masks_nest_and_rise_to_the_target():
    masks, history, pruned = run(schedule="iterative", rounds=3)
    assert [r for r, _ in pruned] == [1, 2, 3] and len(history) == 3
    for (_, earlier), (_, later) in zip(pruned, pruned[1:]):
        for path in earlier:
            assert not (later[path] & ~earlier[path]).any()
    assert [kept(m) for _, m in pruned] == pytest.approx([0.2 ** (r / 3) for r in (1, 2, 3)],
                                                         abs=0.01)
    assert kept(masks) == pytest.approx(0.2, abs=0.01)


def test_round_values_rise_linearly_for_thresholds_and_geometrically_for_sparsity():
    t = configs.override(BASE, criterion="threshold", threshold=0.09, rounds=3)
    assert [round_value(t, r) for r in (1, 2, 3)] == pytest.approx([0.03, 0.06, 0.09])
    s = configs.override(BASE, sparsity=0.99, rounds=2)
    assert [round_value(s, r) for r in (1, 2)] == pytest.approx([0.9, 0.99])


def test_one_shot_prunes_once_and_gradual_never_discretely():
    masks, _, pruned = run(schedule="one-shot")
    assert len(pruned) == 1 and kept(masks) == pytest.approx(0.2, abs=0.01)
    masks, _, pruned = run(schedule="gradual", prune_every=5)
    assert pruned == [] and kept(masks) == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("changes, match", [(dict(schedule="cyclic"), "schedule must be"),
                                            (dict(schedule="iterative", rounds=5), "rounds"),
                                            (dict(criterion="random"), "criterion must be"),
                                            (dict(schedule="gradual", criterion="std"),
                                             "--schedule gradual ramps up a sparsity")])
def test_bad_settings_are_clear_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        run(**changes)


@pytest.mark.parametrize("changes, given", [
    (dict(criterion="threshold"), {"threshold"}), (dict(criterion="std"), {"quality"}),
    (dict(criterion="layer-sparsity", schedule="iterative"), {"sparsity", "rounds"}),
    (dict(schedule="gradual"), {"sparsity", "prune_every"})])
def test_settings_the_criterion_and_schedule_use_are_accepted(changes, given):
    configs.check_pruned(configs.override(BASE, **changes), given)


@pytest.mark.parametrize("changes, given, match", [
    (dict(criterion="threshold"), {"sparsity"}, "--sparsity is not used by --criterion threshold"),
    (dict(criterion="std"), {"threshold"}, "--threshold is not used by --criterion std"),
    (dict(), {"quality"}, "--quality is not used by --criterion global-sparsity"),
    (dict(schedule="one-shot"), {"rounds"}, "--rounds is not used by --schedule one-shot"),
    (dict(schedule="iterative"), {"prune_every"}, "--prune-every is not used by --schedule "
                                                  "iterative")])
def test_a_setting_that_would_be_ignored_is_an_error_naming_its_flag(changes, given, match):
    with pytest.raises(ValueError, match=match):
        configs.check_pruned(configs.override(BASE, **changes), given)


def test_the_configs_criteria_are_the_packages():
    assert configs.CRITERION_FIELD == criteria.VALUE_NAME
    assert set(configs.STRUCTURES) - {"none"} == set(criteria.STRUCTURES)
    assert configs.NORMS == criteria.NORMS
