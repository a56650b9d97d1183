"""Schedules as callbacks: the gradual ramp between steps and iterative rounds."""

import keras
import numpy as np
import pytest

from _models import (assert_pruned_weights_are_zero, jit_here, steps, users_conv_model,
                     users_data, weights_of)
from pruning import (GradualPruning, IterativePruning, PolynomialDecay, criteria, get_masks,
                     prune_low_magnitude)


def total_sparsity(model):
    return criteria.sparsity(list(get_masks(model).values()))


def test_polynomial_decay_follows_the_cubic_formula():
    s = PolynomialDecay(final_sparsity=0.9, initial_sparsity=0.1, begin_step=100, end_step=1100)
    assert s.sparsity(0) == pytest.approx(0.1) and s.sparsity(100) == pytest.approx(0.1)
    assert s.sparsity(600) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5 ** 3)
    assert s.sparsity(850) == pytest.approx(0.9 + (0.1 - 0.9) * 0.25 ** 3)
    assert s.sparsity(1100) == pytest.approx(0.9) and s.sparsity(5000) == pytest.approx(0.9)


def test_polynomial_decay_updates_every_frequency_steps_and_at_the_end():
    s = PolynomialDecay(final_sparsity=0.5, begin_step=10, end_step=255, frequency=100)
    assert [t for t in range(400) if s.is_update_step(t)] == [10, 110, 210, 255]
    for t in range(400):  # the last update by t is the last step is_update_step names
        assert s.last_update(t) == max((u for u in range(t + 1) if s.is_update_step(u)),
                                       default=None)


@pytest.mark.parametrize("kwargs, match", [
    (dict(final_sparsity=1.0, end_step=10), "final_sparsity"),
    (dict(final_sparsity=0.5, initial_sparsity=0.6, end_step=10), "initial_sparsity"),
    (dict(final_sparsity=0.5, end_step=10, begin_step=10), "begin_step"),
    (dict(final_sparsity=0.5, end_step=10, frequency=0), "frequency")])
def test_polynomial_decay_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolynomialDecay(**kwargs)


class RecordSparsity(keras.callbacks.Callback):
    """{optimizer step: (total sparsity, masks)} after every compiled call."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self.seen[step] = (total_sparsity(self.model), get_masks(self.model))


@pytest.mark.parametrize("steps_per_execution", [1, 7])
@pytest.mark.parametrize("criterion", ["global-sparsity", "layer-sparsity"])
def test_gradual_pruning_follows_its_schedule_inside_the_compiled_step(steps_per_execution,
                                                                       criterion):
    """14 steps an epoch at batch 16 (224 images): every 7th step is seen with both settings."""
    if steps(steps_per_execution) != steps_per_execution:
        pytest.skip("one step per execution on PyTorch: the steps_per_execution=1 case")
    model = users_conv_model()
    prune_low_magnitude(model, criterion, 0.0)
    # on PyTorch jit_compile is torch.compile, 20-50 s a model on 2 cores: for one criterion
    jit = keras.backend.backend() != "torch" or criterion == "layer-sparsity"
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit,
                  steps_per_execution=steps(steps_per_execution))
    schedule = PolynomialDecay(final_sparsity=0.8, initial_sparsity=0.1, begin_step=7,
                               end_step=35, frequency=7)
    record = RecordSparsity()
    history = model.fit(*users_data(224), batch_size=16, epochs=4, verbose=0,
                        callbacks=[GradualPruning(schedule, criterion), record])
    for step in (7, 14, 21, 28, 35):  # update steps: the sparsity the cubic formula gives
        assert record.seen[step][0] == pytest.approx(schedule.sparsity(step), abs=2e-3)
    assert record.seen[35][0] == pytest.approx(0.8, abs=2e-3)  # final at the end step
    seen = sorted(record.seen)
    for earlier, later in zip(seen, seen[1:]):  # masks only shrink
        for name, mask in record.seen[later][1].items():
            assert not (mask & ~record.seen[earlier][1][name]).any()
    for step in seen[seen.index(35):]:  # and stay fixed after the end
        assert record.seen[step][0] == record.seen[35][0]
    assert history.history["sparsity"][-1] == record.seen[56][0]
    assert history.history["sparsity"][0] == record.seen[14][0]  # in the epoch logs
    assert_pruned_weights_are_zero(model, get_masks(model))


@pytest.mark.parametrize("criterion", ["global-sparsity", "layer-sparsity"])
@pytest.mark.parametrize("block", [(1, 1), (1, 4), (2, 2), "2:4", "1:3"])
def test_gradual_masks_are_the_one_shot_criterions(criterion, block):
    model = users_conv_model()
    weights = list(weights_of(model).values())
    prune_low_magnitude(model, criterion, 0.0)
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(*users_data(16), batch_size=16, verbose=0, callbacks=[GradualPruning(
        PolynomialDecay(final_sparsity=0.7, end_step=1), criterion, pattern=block)])
    expected = criteria.criterion_masks(weights, criterion, 0.7, pattern=block)
    for got, want in zip(get_masks(model).values(), expected):
        np.testing.assert_array_equal(got, want)


def test_gradual_pruning_in_blocks_keeps_its_sparsity_where_the_edge_blocks_are_smaller():
    """157 inputs in 1x4 blocks (each unit's last block holds one weight), the masks recomputed
    50 times: each time the kernel keeps the weights its target asks (counting whole blocks lost
    up to 3 weights per edge block per update: a 50% target ended at 95%)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((157,)), keras.layers.Dense(20, "relu"),
                              keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    rng = np.random.default_rng(0)
    x, y = rng.random((320, 157), np.float32), rng.random((320, 3), np.float32)
    model.fit(x, y, batch_size=16, epochs=6, verbose=0, callbacks=[GradualPruning(
        PolynomialDecay(final_sparsity=0.5, end_step=100, frequency=2), "layer-sparsity",
        pattern="1x4")])
    assert np.mean(model.layers[0].kernel.numpy() == 0) == pytest.approx(0.5, abs=0.01)


def test_gradual_pruning_ramps_each_weight_to_its_own_final_sparsity():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, name="a"),
                              keras.layers.Dense(3, name="b")])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    rng = np.random.default_rng(0)
    x, y = rng.random((160, 20), np.float32), rng.random((160, 3), np.float32)
    record = RecordSparsity()
    finals = {"a/kernel": 0.9, "b/kernel": 0.3}
    schedule = PolynomialDecay(final_sparsity=0.6, end_step=20, frequency=5)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[
        GradualPruning(schedule, "layer-sparsity", final_sparsities=finals), record])
    for layer, final in (("a", 0.9), ("b", 0.3)):
        kernel = model.get_layer(layer).kernel.numpy()
        assert np.mean(kernel == 0) == pytest.approx(final, abs=0.02)
        halfway = 1 - record.seen[10][1][f"{layer}/kernel"].mean()  # the same share of its own
        assert halfway == pytest.approx(final * schedule.sparsity(10) / 0.6, abs=0.03)
    with pytest.raises(ValueError, match="per-weight targets need criterion layer-sparsity"):
        GradualPruning(schedule, "global-sparsity", final_sparsities=finals)


def test_a_later_fit_without_the_callback_does_not_prune_further():
    model = users_conv_model()
    prune_low_magnitude(model, "global-sparsity", 0.0)
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(*users_data(32), batch_size=16, verbose=0, callbacks=[GradualPruning(
        PolynomialDecay(final_sparsity=0.5, end_step=100, frequency=1))])
    reached = total_sparsity(model)
    model.fit(*users_data(32), batch_size=16, epochs=2, verbose=0)
    assert 0 < reached < 0.5 and total_sparsity(model) == reached


def test_gradual_pruning_refuses_a_bare_number_and_a_criterion_without_sparsity():
    with pytest.raises(ValueError, match="criterion: gradual pruning needs"):
        GradualPruning(PolynomialDecay(0.5, 10), criterion="threshold")
    with pytest.raises(ValueError, match=r"schedule must be a pruning.PolynomialDecay, got 0.8"):
        GradualPruning(0.8)
    with pytest.raises(ValueError, match="end_step must be an integer"):
        PolynomialDecay(0.5, 10.5)


def test_gradual_pruning_refuses_a_step_that_empties_a_layer_as_a_one_shot_prune_does():
    """global-sparsity ranks every layer's weights together: a layer of small weights can lose
    all of them, which leaves a dead network."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(8, name="small",
                           kernel_initializer=keras.initializers.RandomNormal(stddev=0.01)),
        keras.layers.Dense(2, name="big", kernel_initializer="ones")])
    model.compile(keras.optimizers.SGD(1e-4), "mse")
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    with pytest.raises(ValueError, match=r"global-sparsity pruning at sparsity 0\.79\d* \(step 5 "
                                         r"of the schedule\) removes every weight of small/kernel"):
        model.fit(x, x[:, :2], batch_size=8, epochs=2, verbose=0, callbacks=[
            GradualPruning(PolynomialDecay(0.8, end_step=6, frequency=1))])
    assert all(mask.any() for mask in get_masks(model).values())

@pytest.mark.parametrize("jit", [False, True])
def test_gradual_pruning_of_a_trained_unpruned_model_chooses_its_layers(jit):
    """No prune_low_magnitude first: the callback gives the chosen layers dense masks."""
    jit = jit_here(jit)
    model = users_conv_model()
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit,
                  steps_per_execution=steps(2))
    model.fit(*users_data(), batch_size=16, verbose=0)
    model.fit(*users_data(), batch_size=16, epochs=2, verbose=0, callbacks=[GradualPruning(
        PolynomialDecay(final_sparsity=0.6, end_step=12, frequency=3), "layer-sparsity",
        layers=["fc", "out"])])
    masks = get_masks(model)
    assert sorted(masks) == ["fc/kernel", "out/kernel"]
    assert_pruned_weights_are_zero(model, masks)
    for key, mask in masks.items():
        assert 1 - mask.mean() == pytest.approx(0.6, abs=0.02), key


def test_iterative_pruning_refuses_bad_targets_when_made():
    with pytest.raises(ValueError, match="a value of targets .* must be in"):
        IterativePruning("layer-sparsity", {0: 1.5})
    with pytest.raises(ValueError, match="targets must map epochs"):
        IterativePruning("layer-sparsity", [0.5])
    with pytest.raises(ValueError, match="a value of targets .* must be in"):  # a weight's own
        IterativePruning("layer-sparsity", {2: {"fc": 1.5}})


def test_iterative_pruning_refuses_a_target_naming_no_weight_before_training():
    model = users_conv_model()
    model.compile(keras.optimizers.SGD(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"targets\[2\]: layers: \['fc2'\] not among the prunable"):
        model.fit(*users_data(32), batch_size=16, epochs=3, verbose=0, callbacks=[
            IterativePruning("layer-sparsity", {2: {"fc": 0.5, "fc2": 0.5}})])
    for a, b in zip(before, model.get_weights()):  # not one step trained
        np.testing.assert_array_equal(a, b)


def test_iterative_pruning_waits_for_its_first_epoch_on_an_unpruned_model():
    model = users_conv_model()
    model.compile(keras.optimizers.SGD(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(*users_data(), batch_size=16, epochs=2, verbose=0,
                        callbacks=[IterativePruning("layer-sparsity", {1: 0.5})])
    assert history.history["sparsity"] == [0.5] and len(get_masks(model)) == 4
    assert_pruned_weights_are_zero(model, get_masks(model))


@pytest.mark.parametrize("jit", [False, True])
def test_iterative_pruning_prunes_at_the_chosen_epochs_with_nested_masks(jit):
    jit = jit_here(jit)
    model = users_conv_model()
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    rounds = IterativePruning("global-sparsity", {0: 0.5, 2: 0.75})
    pruned = []
    rounds.on_prune = lambda epoch, masks: pruned.append((epoch, masks))
    history = model.fit(*users_data(), batch_size=16, epochs=3, verbose=0, callbacks=[rounds])
    assert [e for e, _ in pruned] == [0, 2]
    for name, mask in pruned[1][1].items():
        assert not (mask & ~pruned[0][1][name]).any()
    assert history.history["sparsity"] == pytest.approx([0.5, 0.5, 0.75], abs=1e-3)
    for key, mask in pruned[1][1].items():  # the weights agree with the masks: zero
        assert not weights_of(model)[key][~mask].any(), key


def test_a_schedule_that_ended_before_the_fit_is_refused_not_ignored():
    model = users_conv_model()
    model.compile(keras.optimizers.SGD(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*users_data(), batch_size=16, verbose=0)  # 10 updates
    with pytest.raises(ValueError, match="ends at step 5, but the optimizer has made 10"):
        model.fit(*users_data(), batch_size=16, verbose=0, callbacks=[GradualPruning(
            PolynomialDecay(final_sparsity=0.5, end_step=5))])


def test_a_second_gradual_fit_prunes_further_from_where_the_first_stopped():
    model = users_conv_model()
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=keras.backend.backend() != "torch")  # (jit_here)
    n_variables = None
    for begin, end, final in ((0, 10, 0.5), (10, 20, 0.8)):
        model.fit(*users_data(), batch_size=16, verbose=0, callbacks=[GradualPruning(
            PolynomialDecay(final, begin_step=begin, end_step=end, frequency=5),
            "layer-sparsity")])
        for key, mask in get_masks(model).items():
            assert 1 - mask.mean() == pytest.approx(final, abs=0.02), key
        assert_pruned_weights_are_zero(model, get_masks(model))
        n_variables = n_variables or len(model.optimizer.variables)
        assert len(model.optimizer.variables) == n_variables  # nothing of pruning left in it


def test_gradual_pruning_refuses_a_frozen_pruned_layer():
    model = users_conv_model()
    prune_low_magnitude(model, "layer-sparsity", 0.0)
    model.get_layer("conv1").trainable = False
    model.compile(keras.optimizers.SGD(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match=r"\['conv1/kernel'\] are not trainable"):
        model.fit(*users_data(16), verbose=0, callbacks=[GradualPruning(
            PolynomialDecay(final_sparsity=0.5, end_step=5))])
