import keras
import numpy as np
import pytest

import configs
from tests.helpers import TINY, tiny_data, tiny_model
from pruning import criteria
import training.recipes
from training.recipes import kept_midpoint, prune_and_fine_tune, round_value, search_sparsity
from training.fit import TrainingDiverged
from utils import flags

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


@pytest.mark.parametrize("structure", ["none", "inputs"])
def test_variational_writes_what_it_learnt_to_drop_into_the_model_masked(structure):
    config = configs.override(BASE, schedule="variational", lr_values=(1e-2,), epochs=3,
                              structure=structure)
    model, _ = tiny_model(config)
    masks, history = prune_and_fine_tune(model, keras.optimizers.SGD(0.05), config, tiny_data(),
                                         log=lambda *_: None)
    assert [type(l).__name__ for l in model.layers if l.weights] == ["Dense"] * 3  # its own
    assert sorted(masks) == sorted(f"{l.name}/kernel" for l in model.layers if l.weights)
    for layer in model.layers:
        if layer.weights:
            mask = masks[f"{layer.name}/kernel"]
            assert not layer.kernel.numpy()[~mask].any() and layer.kernel.numpy()[mask].all()
            if structure == "inputs":  # whole input features (rows), every layer
                assert (mask == mask.any(axis=1, keepdims=True)).all()
                assert layer.kernel.constraint.pattern == "inputs"
    assert len(history) == 3 and history[-1]["sparsity"] == pytest.approx(1 - kept(masks))


def test_masked_epochs_fine_tune_what_variational_dropout_kept_under_its_masks():
    """--masked-epochs 2 after 3 variational epochs: the same masks as without (the same seed),
    the kept weights moved on, the pruned ones still exactly 0, and 5 history entries, the
    last 2 marked masked."""
    config = configs.override(BASE, schedule="variational", lr_values=(1e-2,), epochs=3)
    runs = []
    for epochs in (0, 2):
        model, _ = tiny_model(config)
        masks, history = prune_and_fine_tune(
            model, keras.optimizers.SGD(0.05), configs.override(config, masked_epochs=epochs),
            tiny_data(), log=lambda *_: None)
        runs.append((masks, [l.kernel.numpy() for l in model.layers if l.weights], history))
    (masks, kernels, history), (masks2, kernels2, history2) = runs
    assert all((masks[k] == masks2[k]).all() for k in masks)
    for kernel, kernel2, mask in zip(kernels, kernels2, masks.values()):
        assert not kernel2[~mask].any() and (kernel2[mask] != kernel[mask]).any()
    assert [h["epoch"] for h in history2] == [1, 2, 3, 4, 5] and history2[:3] == history
    assert [h.get("masked", False) for h in history2] == [False] * 3 + [True] * 2


def test_masked_epochs_train_on_the_labels_alone(monkeypatch):
    """With --distill, the variational fit trains toward the teacher's mixture; the masked
    epochs after it on the labels (the teacher cost 0.2 points there: training/recipes.py)."""
    teachers = []

    def fit(model, optimizer, config, data, callbacks=(), log=print, backup_dir=None,
            teacher=None):
        teachers.append(teacher)
        return [dict(epoch=e + 1) for e in range(config.epochs)]
    monkeypatch.setattr(training.recipes, "fit", fit)
    config = configs.override(BASE, schedule="variational", epochs=2, masked_epochs=1,
                              distill=0.5)
    model, _ = tiny_model(config)
    _, history = prune_and_fine_tune(model, None, config, tiny_data(), log=lambda *_: None)
    assert isinstance(teachers[0], keras.Model) and teachers[1:] == [None]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_a_variational_run_with_masked_epochs_resumes_both_fits_from_its_backup(tmp_path):
    """Run again on the backup of a finished run (interrupted before its checkpoint was
    written), it trains no epoch more: both fits resume after their last one."""
    config = configs.override(BASE, schedule="variational", lr_values=(1e-2,), epochs=2,
                              masked_epochs=2)
    runs = []
    for _ in range(2):
        model, _ = tiny_model(config)
        lines = []
        _, history = prune_and_fine_tune(model, keras.optimizers.SGD(0.05), config, tiny_data(),
                                         log=lines.append, backup_dir=tmp_path)
        runs.append(([l.kernel.numpy() for l in model.layers if l.weights], history, lines))
    (kernels, history, _), (kernels2, history2, lines2) = runs
    assert history2 == history and len(history) == 4
    assert all((k == k2).all() for k, k2 in zip(kernels, kernels2))
    assert [line.split(",")[0] for line in lines2] == ["resumed after epoch 2 of 2"] * 2


@pytest.mark.parametrize("schedule", ["one-shot", "variational"])
@pytest.mark.parametrize("distill", [0.0, 1.0])
def test_distillation_trains_toward_the_starting_networks_answers(schedule, distill):
    """The label of an image is the largest of its first 3 pixels; the starting network was
    trained to answer the next class instead (83% of the time): with --distill 1, the pruned
    and fine-tuned network keeps answering as it did, against the labels; with 0 it leaves its
    answers for the labels."""
    rng = np.random.default_rng(0)
    x = rng.random((300, TINY.input_size)).astype(np.float32)
    y = x[:, :3].argmax(axis=1).astype(np.int32)
    data = {**tiny_data(), "train": (x, y), "validation": (x[:50], y[:50])}
    config = configs.override(BASE, schedule=schedule, criterion="layer-sparsity", sparsity=0.5,
                              epochs=5, distill=distill,
                              lr_values=(0.05 if schedule == "one-shot" else 0.01,))
    model, _ = tiny_model(config)
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, (y + 1) % 3, epochs=30, verbose=0)
    assert (model.predict(x, verbose=0).argmax(axis=1) == (y + 1) % 3).mean() > 0.8
    prune_and_fine_tune(model, keras.optimizers.SGD(0.05, momentum=0.9), config, data,
                        log=lambda *_: None)
    as_taught = (model.predict(x, verbose=0).argmax(axis=1) == (y + 1) % 3).mean()
    assert as_taught > 0.75 if distill else as_taught < 0.5


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
    flags.check_pruned(configs.override(BASE, **changes), given)


@pytest.mark.parametrize("changes, given, match", [
    (dict(criterion="threshold"), {"sparsity"}, "--sparsity is not used by --criterion threshold"),
    (dict(criterion="std"), {"threshold"}, "--threshold is not used by --criterion std"),
    (dict(), {"quality"}, "--quality is not used by --criterion global-sparsity"),
    (dict(schedule="one-shot"), {"rounds"}, "--rounds is not used by --schedule one-shot"),
    (dict(schedule="iterative"), {"prune_every"}, "--prune-every is not used by --schedule "
                                                  "iterative"),
    (dict(max_accuracy_drop=0.5), {"sparsity"}, "--max-accuracy-drop searches the sparsity"),
    (dict(max_accuracy_drop=0.5, criterion="threshold"), set(), "--max-accuracy-drop searches a "
                                                                "sparsity: it needs"),
    (dict(), {"search_steps"}, "--search-steps is not used without --max-accuracy-drop"),
    (dict(max_accuracy_drop=0.5, search_steps=21), {"search_steps"}, "--search-steps must be at "
                                                                     "most 20, got 21: each step"),
    (dict(schedule="variational"), {"sparsity"}, "--schedule variational learns which weights "
                                                 "or units to prune .* --sparsity is not used"),
    (dict(schedule="variational", block=(1, 4)), set(), "--block is not used"),
    (dict(schedule="variational", kl_warmup_epochs=9), {"kl_warmup_epochs"},
     "--kl-warmup-epochs must be in \\[1, --epochs 3\\]"),
    (dict(schedule="gradual"), {"kl_warmup_epochs"}, "--kl-warmup-epochs is not used by "
                                                     "--schedule gradual"),
    (dict(criterion="layer-sparsity", allocation="sensitivity", sparsity=0.998), {"sparsity"},
     "--allocation sensitivity measures each layer up to sparsity 0.995, so the total can reach "
     "at most that: --sparsity must be <= 0.995, got 0.998")])
def test_a_setting_that_would_be_ignored_is_an_error_naming_its_flag(changes, given, match):
    with pytest.raises(ValueError, match=match):
        flags.check_pruned(configs.override(BASE, **changes), given)


def test_the_configs_criteria_are_the_packages():
    assert configs.CRITERION_FIELD == criteria.VALUE_NAME
    assert set(configs.STRUCTURES) - {"none"} == set(criteria.STRUCTURES)
    assert configs.NORMS == criteria.NORMS


def test_the_search_halves_the_compression_range_in_log_steps():
    assert kept_midpoint(1.0, 1e-3) == pytest.approx(10 ** -1.5)  # 31.6x fewer weights first
    assert kept_midpoint(0.1, 0.01) == pytest.approx(10 ** -1.5)


def fake_runs(monkeypatch, accuracy):
    """prune_and_fine_tune replaced by a run whose validation accuracy is accuracy(sparsity)."""
    def run_(model, optimizer, config, data, on_prune=None, log=print):
        if accuracy(config.sparsity) is None:
            raise ValueError("global-sparsity pruning removes every weight of fc3/kernel")
        return {}, [dict(val_accuracy=accuracy(config.sparsity))]
    monkeypatch.setattr(training.recipes, "prune_and_fine_tune", run_)


def test_the_search_keeps_the_sparsest_run_within_the_drop(monkeypatch):
    # 1 point lost beyond 90%; beyond 95% the criterion refuses (a layer left with nothing)
    fake_runs(monkeypatch, lambda s: 0.98 if s <= 0.9 else 0.97 if s <= 0.95 else None)
    config = configs.override(BASE, max_accuracy_drop=0.5, search_steps=6)
    *_, chosen, _, _, probes = search_sparsity(lambda c: (None, None), config, {}, 0.98,
                                               log=lambda *_: None)
    assert [p["within"] for p in probes] == [p["sparsity"] <= 0.9 for p in probes]
    assert probes[0]["sparsity"] == pytest.approx(1 - 10 ** -1.5, abs=1e-5)
    assert 0.88 < chosen.sparsity <= 0.9  # six halvings of 1x-1000x: within 12% of 10x
    assert chosen.sparsity == max(p["sparsity"] for p in probes if p["within"])


def test_a_search_stops_when_its_next_probe_was_run_already(monkeypatch):
    """40 steps asked: the bisection's range shrinks to one 5-decimal sparsity long before, and
    a probe is never fine-tuned twice."""
    fake_runs(monkeypatch, lambda s: 0.98 if s <= 0.9 else 0.97)
    config = configs.override(BASE, max_accuracy_drop=0.5, search_steps=40)
    *_, chosen, _, _, probes = search_sparsity(lambda c: (None, None), config, {}, 0.98,
                                               log=lambda *_: None)
    sparsities = [p["sparsity"] for p in probes]
    assert len(sparsities) == len(set(sparsities)) < 25
    assert 0.8999 <= chosen.sparsity <= 0.9  # the boundary, to 5 decimals


@pytest.mark.parametrize("shrunk_from, label", [("", "dense"), ("p", "starting network's")])
def test_a_search_names_the_network_its_budget_is_measured_from(monkeypatch, shrunk_from, label):
    """Inside a shrunk network (--structured-dir) the budget is the shrunk one's accuracy, never
    called "dense"."""
    fake_runs(monkeypatch, lambda s: 0.98 if s <= 0.9 else 0.97)
    lines = []
    search_sparsity(lambda c: (None, None), configs.override(
        BASE, max_accuracy_drop=0.5, search_steps=2, shrunk_from=shrunk_from), {}, 0.98,
        log=lines.append)
    assert f"({label} 0.9800)" in "\n".join(lines)
    assert shrunk_from or "starting network" not in "\n".join(lines)


def test_a_search_stops_at_the_first_diverged_run_and_says_why_when_none_could_run(monkeypatch):
    """A diverged fine-tuning is not "too sparse": the search ends there, not after five more
    runs; a search where no probe could run is one error, not a TypeError."""
    runs = []

    def diverge(model, optimizer, config, data, on_prune=None, log=print):
        runs.append(config.sparsity)
        raise TrainingDiverged("the loss became nan in epoch 1, step 3: training diverged")
    monkeypatch.setattr(training.recipes, "prune_and_fine_tune", diverge)
    config = configs.override(BASE, max_accuracy_drop=0.5, search_steps=6)
    with pytest.raises(TrainingDiverged, match="training diverged"):
        search_sparsity(lambda c: (None, None), config, {}, 0.98, log=lambda *_: None)
    assert len(runs) == 1
    fake_runs(monkeypatch, lambda s: None)  # every sparsity refused by the criterion
    with pytest.raises(ValueError, match=r"the least sparse, 0\.\d+, could not run\)"):
        search_sparsity(lambda c: (None, None), config, {}, 0.98, log=lambda *_: None)


def test_a_search_with_nothing_within_the_drop_is_an_error(monkeypatch):
    fake_runs(monkeypatch, lambda s: 0.5)
    config = configs.override(BASE, max_accuracy_drop=0.5, search_steps=3)
    with pytest.raises(ValueError, match="no sparsity tried stays within 0.5 points of the dense "
                                         "validation accuracy 0.9800"):
        search_sparsity(lambda c: (None, None), config, {}, 0.98, log=lambda *_: None)


def test_a_real_search_prunes_its_chosen_run_to_the_sparsity_it_reports():
    config = configs.override(BASE, max_accuracy_drop=100.0, search_steps=2, epochs=1,
                              criterion="layer-sparsity")
    model, _, chosen, masks, _, probes = search_sparsity(
        lambda c: (tiny_model(c)[0], keras.optimizers.SGD(0.05)), config, tiny_data(), 0.5,
        log=lambda *_: None)
    assert [p["within"] for p in probes] == [True, True]  # any accuracy is within 100 points
    assert chosen.sparsity == probes[1]["sparsity"] == pytest.approx(1 - 10 ** -2.25, abs=1e-5)
    for mask in masks.values():  # layer-sparsity: round((1 - s) x size) kept, at least one
        assert mask.sum() == max(1, round((1 - chosen.sparsity) * mask.size))
    for layer in model.layers:  # the returned model is that run's: its zeros are its masks'
        if hasattr(layer, "kernel"):
            assert (layer.kernel.numpy() != 0).sum() <= masks[f"{layer.name}/kernel"].sum()


@pytest.mark.parametrize("schedule", ["one-shot", "iterative", "gradual"])
def test_a_sensitivity_allocation_prunes_each_layer_to_its_own_share_of_the_total(schedule):
    masks, _, _ = run(schedule=schedule, criterion="layer-sparsity", allocation="sensitivity",
                      sparsity=0.7, rounds=3)
    sizes = {k: m.size for k, m in masks.items()}
    pruned = {k: 1 - m.sum() / m.size for k, m in masks.items()}
    assert sum(pruned[k] * sizes[k] for k in masks) / sum(sizes.values()) == pytest.approx(
        0.7, abs=0.01)
    assert len({round(p, 2) for p in pruned.values()}) > 1  # not one cut for all


def test_an_allocation_needs_the_layer_sparsity_criterion():
    with pytest.raises(ValueError, match="--allocation sensitivity sets each layer's sparsity"):
        flags.check_pruned(configs.override(BASE, allocation="sensitivity"))


def test_a_variational_run_stops_at_the_first_epoch_a_layer_drops_everything():
    """Not trained on to fail later in the plot: the epoch's end names the layer."""
    from pruning import variational_dropout
    model, _ = tiny_model()
    copy = variational_dropout(model, train_size=10)
    layer = copy.layers[-1]
    layer.log_sigma2.assign(np.full(layer.log_sigma2.shape, 30.0))  # log alpha >> 3 everywhere
    stop = training.recipes.StopOnEmptyLayer()
    stop.set_model(copy)
    with pytest.raises(ValueError, match=rf"dropped every weight of \['{layer.name}/kernel'\] "
                                         r"by epoch 2: nothing is saved"):
        stop.on_epoch_end(1)
