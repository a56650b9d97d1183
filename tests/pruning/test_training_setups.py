"""Every training setup Keras offers, on the backend the suite runs on (TensorFlow, JAX, PyTorch):
EMA, loss scaling, gradient accumulation, float16 / float64 weights, frozen layers, a checkpoint
saved in the middle of a gradual fit and resumed. Asserted on the weights themselves."""
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import pruning
from _models import (assert_pruned_weights_are_zero, compile_, users_conv_model, users_data,
                     weights_of, zero_fraction)
from pruning import GradualPruning, PolynomialDecay, get_masks, prune_low_magnitude

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BACKEND = keras.backend.backend()


def gradual(final=0.8, end=10, **kwargs):
    return GradualPruning(PolynomialDecay(final_sparsity=final, end_step=end, frequency=5),
                          **kwargs)


def kernel_zeros(model):
    """{weight key: fraction of exact zeros} read from the weights."""
    return {k: zero_fraction(v) for k, v in weights_of(model).items()}


@pytest.mark.parametrize("order", ["prune, compile", "compile, prune"])
def test_ema_final_copy_keeps_the_pruned_weights_zero(order):
    """With use_ema, fit ends by copying the moving averages into the weights, outside any
    constraint; the averages of pruned weights are not zero."""
    model = users_conv_model()
    optimizer = keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9)
    if order == "prune, compile":
        prune_low_magnitude(model, "layer-sparsity", 0.75)
        compile_(model, optimizer)
    else:  # on JAX, compiled: a second fit after an EMA fit (masks._masked_after's copy)
        compile_(model, optimizer)
        model.fit(*users_data(32), batch_size=16, verbose=0)
        prune_low_magnitude(model, "layer-sparsity", 0.75)
    model.fit(*users_data(), batch_size=16, epochs=2, verbose=0)
    assert_pruned_weights_are_zero(model, get_masks(model))
    assert all(z == pytest.approx(0.75, abs=0.01) for z in kernel_zeros(model).values())


@pytest.mark.parametrize("how", ["load_model", "clone_model"])
def test_ema_keeps_the_zeros_of_a_loaded_or_cloned_model_with_no_call_of_the_package(how,
                                                                                       tmp_path):
    """The model whose EMA fit ends the run never passed through the package: a pruned model
    saved and loaded (or cloned), compiled with EMA, fitted."""
    model = users_conv_model()
    prune_low_magnitude(model, "layer-sparsity", 0.75)
    if how == "load_model":
        model.save(tmp_path / "pruned.keras")
        other = keras.models.load_model(tmp_path / "pruned.keras")
    else:
        other = keras.models.clone_model(model)
        other.set_weights(model.get_weights())
    compile_(other, keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9))
    other.fit(*users_data(), batch_size=16, epochs=2, verbose=0)
    assert_pruned_weights_are_zero(other, get_masks(model))


@pytest.mark.parametrize("swap_on_epoch", [False, True])
def test_keras_swap_ema_weights_callback_swaps_in_averages_with_the_zeros(swap_on_epoch):
    """Keras' SwapEMAWeights puts the moving averages into the weights for validation and (with
    swap_on_epoch) for the callbacks after it at an epoch's end, ModelCheckpoint's place: the
    averages of pruned weights are not zero, so validation would run an unpruned network."""
    model = users_conv_model()
    prune_low_magnitude(model, "layer-sparsity", 0.75)
    masks = get_masks(model)
    compile_(model, keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9))
    trained, swapped = [], []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            trained[:] = [weights_of(self.model)]

        def on_test_begin(self, logs=None):
            swapped.append(weights_of(self.model))

        def on_epoch_end(self, epoch, logs=None):  # what ModelCheckpoint would save
            swapped.append(weights_of(self.model))

    data = users_data(64)
    model.fit(*data, batch_size=16, epochs=2, verbose=0, validation_data=data,
              callbacks=[keras.callbacks.SwapEMAWeights(swap_on_epoch), Spy()])
    assert len(swapped) == 4
    for weights in swapped:
        for key, mask in masks.items():
            assert not weights[key][~mask].any(), f"{key}: a pruned weight is not zero"
    # the averages were swapped in, not the weights the last step left
    assert not all(np.array_equal(swapped[-2][k], trained[0][k]) for k in masks)
    assert_pruned_weights_are_zero(model, masks)


def test_ema_under_gradual_pruning_ends_with_the_masks_zeros():
    model = users_conv_model()
    compile_(model, keras.optimizers.Adam(0.01, use_ema=True))
    model.fit(*users_data(), batch_size=16, epochs=2, verbose=0,
              callbacks=[gradual(0.8, criterion="layer-sparsity")])
    assert_pruned_weights_are_zero(model, get_masks(model))
    assert all(z == pytest.approx(0.8, abs=0.01) for z in kernel_zeros(model).values())


def test_gradient_accumulation_counts_updates_not_batches():
    """3 batches make one update: 20 batches, 6 updates; the ramp ends at update 5."""
    model = users_conv_model()
    compile_(model, keras.optimizers.SGD(0.05, gradient_accumulation_steps=3))
    record = []

    class Seen(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            record.append((int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
                           pruning.sparsity(list(get_masks(self.model).values()))))

    model.fit(*users_data(320), batch_size=16, verbose=0,
              callbacks=[GradualPruning(PolynomialDecay(0.6, end_step=5, frequency=5),
                                        "layer-sparsity"), Seen()])
    assert [s for u, s in record if u < 5] == [0.0] * 14  # batches 1-14
    assert all(s == pytest.approx(0.6, abs=0.01) for u, s in record if u >= 5)
    assert_pruned_weights_are_zero(model, get_masks(model))


@pytest.mark.skipif(BACKEND == "torch", reason="mixed_float16 matmuls on the CPU: slow on torch")
def test_loss_scaling_under_mixed_precision_holds_the_masks():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = users_conv_model()
        model.compile(keras.optimizers.SGD(0.05), LOSS)  # wrapped in a LossScaleOptimizer
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        model.fit(*users_data(), batch_size=16, epochs=2, verbose=0,
                  callbacks=[gradual(0.7, criterion="layer-sparsity")])
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert_pruned_weights_are_zero(model, get_masks(model))
    assert all(z == pytest.approx(0.7, abs=0.01) for z in kernel_zeros(model).values())


def float_model(dtype):
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((12,), dtype=dtype),
                             keras.layers.Dense(16, "relu", dtype=dtype, name="a"),
                             keras.layers.Dense(3, dtype=dtype, name="b")])


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_gradual_pruning_of_float16_and_float64_weights_reaches_its_target(dtype):
    if dtype == "float64" and BACKEND == "jax":
        pytest.skip("JAX keeps float64 only with JAX_ENABLE_X64: test_float64_on_jax_with_x64")
    model = float_model(dtype)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    assert model.layers[0].kernel.dtype == dtype
    x = np.random.default_rng(0).random((160, 12)).astype(dtype)
    model.fit(x, x[:, :3], batch_size=16, epochs=2, verbose=0,
              callbacks=[gradual(0.6, criterion="layer-sparsity")])
    assert_pruned_weights_are_zero(model, get_masks(model))
    assert kernel_zeros(model) == pytest.approx({"a/kernel": 0.6, "b/kernel": 0.6}, abs=0.02)


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX run of the suite checks float64 with x64")
def test_float64_on_jax_with_x64():
    script = ("import numpy as np, keras, pruning\n"
              "from test_training_setups import float_model, gradual, kernel_zeros\n"
              "m = float_model('float64'); m.compile(keras.optimizers.SGD(0.05), 'mse')\n"
              "assert m.layers[0].kernel.value.dtype == np.float64\n"
              "x = np.random.default_rng(0).random((160, 12))\n"
              "m.fit(x, x[:, :3], batch_size=16, epochs=2, verbose=0,\n"
              "      callbacks=[gradual(0.6, criterion='layer-sparsity')])\n"
              "print(kernel_zeros(m))\n")
    env = {**os.environ, "JAX_ENABLE_X64": "1", "KERAS_BACKEND": "jax",
           "PYTHONPATH": str(Path(__file__).parent)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    zeros = eval(out.stdout.strip().splitlines()[-1])
    assert zeros == pytest.approx({"a/kernel": 0.6, "b/kernel": 0.6}, abs=0.02)


def test_a_frozen_layer_is_refused_before_any_mask_is_set():
    model = users_conv_model()
    model.get_layer("conv1").trainable = False
    compile_(model, keras.optimizers.SGD(0.05))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"\['conv1/kernel'\] are not trainable"):
        model.fit(*users_data(16), verbose=0, callbacks=[gradual()])
    assert not pruning.pruned_weights(model)  # no mask left behind
    for old, new in zip(before, model.get_weights()):
        assert old.tobytes() == new.tobytes()
    # the suggested way out works: the other layers only
    model.fit(*users_data(), batch_size=16, verbose=0,
              callbacks=[gradual(0.5, end=5, layers=["conv2", "fc", "out"],
                                 criterion="layer-sparsity")])
    assert sorted(get_masks(model)) == ["conv2/kernel", "fc/kernel", "out/kernel"]
    assert_pruned_weights_are_zero(model, get_masks(model))


def test_set_weights_under_a_mask_is_zeroed_by_the_next_step_or_apply_masks():
    model = users_conv_model()
    prune_low_magnitude(model, "layer-sparsity", 0.5)
    masks = get_masks(model)
    dense = users_conv_model().get_weights()  # all non-zero
    model.set_weights(dense)
    pruning.apply_masks(model)
    assert_pruned_weights_are_zero(model, masks)
    model.set_weights(dense)
    compile_(model, keras.optimizers.SGD(0.05))
    model.fit(*users_data(16), batch_size=16, verbose=0)
    assert_pruned_weights_are_zero(model, masks)


class SaveAt(keras.callbacks.Callback):
    """Save the whole model (weights, masks, optimizer state) after batch `at` of epoch 0."""

    def __init__(self, path, at):
        super().__init__()
        self.path, self.at, self.epoch = path, at, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 0 and batch == self.at:
            self.model.save(self.path)


def test_a_checkpoint_saved_mid_gradual_fit_resumes_with_its_optimizer_state(tmp_path):
    """10 batches an epoch, the ramp to 80% ends at update 15: saved at update 6, loaded, the
    remaining 14 updates run; the optimizer's count and moments come back, and the run ends
    where the uninterrupted one does."""
    data = users_data()
    path = str(tmp_path / "mid.keras")

    def run(callbacks, epochs=2, model=None):
        if model is None:
            model = users_conv_model()
            compile_(model, keras.optimizers.Adam(0.01))
        model.fit(*data, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
                  callbacks=[gradual(0.8, end=15, criterion="layer-sparsity"), *callbacks])
        return model

    whole = run([SaveAt(path, 5)])
    resumed = keras.models.load_model(path)
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == 6
    moments = [v for v in resumed.optimizer.variables if "momentum" in v.path]
    assert moments and any(np.abs(keras.ops.convert_to_numpy(v.value)).sum() > 0
                           for v in moments)
    resumed.fit(*data, batch_size=16, epochs=1, shuffle=False, verbose=0,
                callbacks=[gradual(0.8, end=15, criterion="layer-sparsity")])
    resumed.fit(*(d[:64] for d in data), batch_size=16, shuffle=False, verbose=0)
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == 20
    assert kernel_zeros(resumed) == pytest.approx(kernel_zeros(whole), abs=0.01)
    assert all(z == pytest.approx(0.8, abs=0.01) for z in kernel_zeros(resumed).values())
    assert_pruned_weights_are_zero(resumed, get_masks(resumed))
    assert len(resumed.optimizer.variables) == len(whole.optimizer.variables)


@pytest.mark.parametrize("end, stop, backup_first", [(40, 1, False), (40, 1, True),
                                                     (15, 2, True), (15, 2, False)])
def test_backup_and_restore_resumes_a_gradual_fit(tmp_path, end, stop, backup_first):
    """Keras' BackupAndRestore: a fit interrupted in epoch `stop` and run again resumes from the
    backup of the epoch before, with its masks and optimizer state, to the sparsity of the
    schedule's step 30 (where the ramp to 40 has not ended: 78.75%); also after the ramp has
    ended (step 20 of a schedule ending at 15). In either order of the two callbacks: listed
    after GradualPruning, the backup restores the optimizer's count after GradualPruning's
    on_train_begin has read it."""
    data = users_data()

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == stop:
                raise KeyboardInterrupt

    def fit(model, extra):
        callbacks = [gradual(0.8, end=end, criterion="layer-sparsity"),
                     keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))]
        model.fit(*data, batch_size=16, epochs=3, verbose=0,
                  callbacks=[*(callbacks[::-1] if backup_first else callbacks), *extra])

    model = users_conv_model()
    compile_(model, keras.optimizers.Adam(0.01))
    with pytest.raises(KeyboardInterrupt):
        fit(model, [Stop()])
    fresh = users_conv_model()
    compile_(fresh, keras.optimizers.Adam(0.01))
    fit(fresh, [])
    assert int(keras.ops.convert_to_numpy(fresh.optimizer.iterations)) == 30
    at_30 = PolynomialDecay(final_sparsity=0.8, end_step=end, frequency=5).sparsity(30)
    assert all(z == pytest.approx(at_30, abs=0.01) for z in kernel_zeros(fresh).values())
    assert_pruned_weights_are_zero(fresh, get_masks(fresh))


@pytest.mark.parametrize("stop", ["between rounds", "after the last epoch"])
def test_backup_and_restore_resumes_an_iterative_fit_with_its_masks(tmp_path, stop):
    """Keras saves no constraint's variables: a fit resumed between IterativePruning's rounds,
    or after its last epoch, prunes again to the last round's target from the restored zeros,
    instead of training the pruned weights back or ending with no masks."""
    data = users_data()

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if stop == "between rounds" and epoch == 1:
                raise KeyboardInterrupt

        def on_train_end(self, logs=None):
            if stop == "after the last epoch":
                raise KeyboardInterrupt

    def fit(extra):
        model = users_conv_model()
        compile_(model, keras.optimizers.Adam(0.01))
        model.fit(*data, batch_size=16, epochs=3, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False),
            pruning.IterativePruning("layer-sparsity", {0: 0.5, 5: 0.8}), *extra])
        return model

    with pytest.raises(KeyboardInterrupt):
        fit([Stop()])
    resumed = fit([])
    assert get_masks(resumed)
    assert all(z == pytest.approx(0.5, abs=0.01) for z in kernel_zeros(resumed).values())
    assert_pruned_weights_are_zero(resumed, get_masks(resumed))


def test_a_users_train_step_loop_holds_the_masks():
    """A custom loop calling optimizer.apply: the constraint runs there too."""
    model = users_conv_model()
    prune_low_magnitude(model, "global-sparsity", 0.7)
    masks = get_masks(model)
    optimizer = keras.optimizers.Adam(0.01)
    x, y = users_data(32)
    if BACKEND == "jax":
        pytest.skip("a JAX loop is stateless_apply's: covered by fit's train step")
    for _ in range(3):
        if BACKEND == "tensorflow":
            import tensorflow as tf
            with tf.GradientTape() as tape:
                loss = LOSS(y, model(x, training=True))
            optimizer.apply(tape.gradient(loss, model.trainable_variables),
                            model.trainable_variables)
        else:
            import torch
            model.zero_grad()
            LOSS(y, model(x, training=True)).backward()
            with torch.no_grad():
                optimizer.apply([v.value.grad for v in model.trainable_variables],
                                model.trainable_variables)
    assert_pruned_weights_are_zero(model, masks)


def test_a_gradual_fit_stopped_by_an_exception_leaves_the_next_fit_working():
    """An exception skips on_train_end: the next gradual fit starts clean, and ends with the
    optimizer's own state only."""
    model = users_conv_model()
    compile_(model, keras.optimizers.Adam(0.01))

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(*users_data(), batch_size=16, verbose=0, callbacks=[gradual(), Stop()])
    model.fit(*users_data(), batch_size=16, epochs=2, verbose=0,
              callbacks=[gradual(0.5, end=15, criterion="layer-sparsity")])
    assert all(z == pytest.approx(0.5, abs=0.01) for z in kernel_zeros(model).values())
    assert_pruned_weights_are_zero(model, get_masks(model))
    plain = users_conv_model()
    compile_(plain, keras.optimizers.Adam(0.01))
    plain.fit(*users_data(16), batch_size=16, verbose=0)
    assert len(model.optimizer.variables) == len(plain.optimizer.variables)



def test_a_fit_that_keras_refuses_raises_keras_error_not_the_packages():
    """A layer unfrozen without a new compile: Keras' JAX and PyTorch fits refuse (the optimizer
    was built for fewer variables), JAX's leaving its variables without values as it finalizes
    the optimizer; the masking after that must not replace Keras' error with its own."""
    model = users_conv_model()
    prune_low_magnitude(model, "layer-sparsity", 0.5)
    model.get_layer("conv1").trainable = False
    compile_(model, keras.optimizers.Adam(0.01))
    model.fit(*users_data(32), batch_size=16, verbose=0)
    model.get_layer("conv1").trainable = True
    try:
        model.fit(*users_data(32), batch_size=16, verbose=0)
    except ValueError as e:
        assert "optimizer" in str(e)
    else:  # TensorFlow's fit trains it
        assert_pruned_weights_are_zero(model, get_masks(model))
