"""Schedules as callbacks: the gradual ramp inside the compiled step, iterative rounds, and both
under tf.distribute."""
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from pruning import (GradualPruning, IterativePruning, PolynomialDecay, criteria, get_masks,
                     prune_low_magnitude)
from tests.test_masks import users_conv_model, users_data


def total_sparsity(model):
    return criteria.sparsity(list(get_masks(model).values()))


def test_polynomial_decay_follows_the_cubic_formula():
    s = PolynomialDecay(final_sparsity=0.9, initial_sparsity=0.1, begin_step=100, end_step=1100)
    assert s.sparsity(0) == pytest.approx(0.1) and s.sparsity(100) == pytest.approx(0.1)
    assert s.sparsity(600) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5 ** 3)
    assert s.sparsity(850) == pytest.approx(0.9 + (0.1 - 0.9) * 0.25 ** 3)
    assert s.sparsity(1100) == pytest.approx(0.9) and s.sparsity(5000) == pytest.approx(0.9)
    assert float(s.sparsity(tf.constant(600, tf.int64))) == pytest.approx(s.sparsity(600))


def test_polynomial_decay_updates_every_frequency_steps_and_at_the_end():
    s = PolynomialDecay(final_sparsity=0.5, begin_step=10, end_step=255, frequency=100)
    assert [t for t in range(400) if s.is_update_step(t)] == [10, 110, 210, 255]


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
        self.seen[step] = (total_sparsity(self.model), get_masks(self.model), logs["sparsity"])


@pytest.mark.parametrize("steps_per_execution", [1, 7])
@pytest.mark.parametrize("criterion", ["global-sparsity", "layer-sparsity"])
def test_gradual_pruning_follows_its_schedule_inside_the_compiled_step(steps_per_execution,
                                                                       criterion):
    """14 steps an epoch at batch 16 (224 images): every 7th step is seen with both settings."""
    model = users_conv_model()
    prune_low_magnitude(model, criterion, 0.0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True,
                  steps_per_execution=steps_per_execution)
    schedule = PolynomialDecay(final_sparsity=0.8, initial_sparsity=0.1, begin_step=7,
                               end_step=35, frequency=7)
    record = RecordSparsity()
    history = model.fit(*users_data(224), batch_size=16, epochs=4, verbose=0,
                        callbacks=[GradualPruning(schedule, criterion), record])
    for step in (7, 14, 21, 28, 35):  # update steps: the sparsity the cubic formula gives
        assert record.seen[step][0] == pytest.approx(schedule.sparsity(step), abs=2e-3)
        assert record.seen[step][2] == record.seen[step][0]  # and it is in the logs
    assert record.seen[35][0] == pytest.approx(0.8, abs=2e-3)  # final at the end step
    steps = sorted(record.seen)
    for earlier, later in zip(steps, steps[1:]):  # masks only shrink
        for name, mask in record.seen[later][1].items():
            assert not (mask & ~record.seen[earlier][1][name]).any()
    for step in steps[steps.index(35):]:  # and stay fixed after the end
        assert record.seen[step][0] == record.seen[35][0]
    assert history.history["sparsity"][-1] == record.seen[56][0]
    for layer in model.layers:
        if layer.name in get_masks(model):
            assert not layer.kernel.numpy()[~get_masks(model)[layer.name]].any()


@pytest.mark.parametrize("criterion", ["global-sparsity", "layer-sparsity"])
@pytest.mark.parametrize("block", [(1, 1), (1, 4), (2, 2)])
def test_in_graph_masks_match_the_numpy_criterion(criterion, block):
    model = users_conv_model()
    weights = [l.kernel.numpy() for l in model.layers if hasattr(l, "kernel")]
    prune_low_magnitude(model, criterion, 0.0)
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(*users_data(16), batch_size=16, verbose=0, callbacks=[GradualPruning(
        PolynomialDecay(final_sparsity=0.7, end_step=1), criterion, block)])
    expected = criteria.criterion_masks(weights, criterion, 0.7, block=block)
    for got, want in zip(get_masks(model).values(), expected):
        np.testing.assert_array_equal(got, want)


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


def test_gradual_pruning_needs_a_pruned_model_and_a_sparsity_criterion():
    with pytest.raises(ValueError, match="criterion: gradual pruning needs"):
        GradualPruning(PolynomialDecay(0.5, 10), criterion="threshold")
    model = users_conv_model()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="call prune_low_magnitude"):
        model.fit(*users_data(16), verbose=0, callbacks=[GradualPruning(PolynomialDecay(0.5, 10))])


def test_iterative_pruning_prunes_at_the_chosen_epochs_with_nested_masks():
    model = users_conv_model()
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rounds = IterativePruning("global-sparsity", {0: 0.5, 2: 0.75})
    pruned = []
    rounds.on_prune = lambda epoch, masks: pruned.append((epoch, masks))
    history = model.fit(*users_data(), batch_size=16, epochs=3, verbose=0, callbacks=[rounds])
    assert [e for e, _ in pruned] == [0, 2]
    for name, mask in pruned[1][1].items():
        assert not (mask & ~pruned[0][1][name]).any()
    assert history.history["sparsity"] == pytest.approx([0.5, 0.5, 0.75], abs=1e-3)


def test_mirrored_strategy_on_two_cpu_devices_keeps_masks_identical_and_zeros_zero(tmp_path):
    """In a fresh interpreter: the CPU must be split before TensorFlow initialises it."""
    script = Path(__file__).with_name("mirrored_check.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replicas 2, masks identical, zeros hold" in result.stdout
