"""Pruning schedules as Keras callbacks: pass them to `model.fit(callbacks=[...])`.

  GradualPruning   Zhu & Gupta (2017): the sparsity rises along a cubic ramp while training; the
                   masks are recomputed between steps, on the host, by the same NumPy criteria as
                   `prune_low_magnitude` (any dtype, any pattern, ties broken alike), at the
                   optimizer's update count.
  IterativePruning Han et al. (2015): prune further at the start of chosen epochs.
Both put the sparsity of the pruned weights in the epoch logs (`History`) as "sparsity"; not in
every batch's, which would copy every mask to the host at every step.

Why between steps and not inside the compiled step: a mask update every `frequency` (100) steps
costs one host round trip, where a step-side one ran a k-th-largest search in every step's graph,
needed a second (keras.ops) copy of every criterion, and on JAX the masks in the optimizer's
state, where a checkpoint saved mid-fit kept them and `load_model` then dropped the optimizer's
whole state. On JAX a changed mask must still reach the compiled step without a retrace (a
compile costs about a second): for the length of the fit the masks ride in the state of the
optimizer that applies the constraints, and the optimizer saves and loads its own state without
them, so a checkpoint written during the fit is the same as one written outside it.
"""
import dataclasses
import numbers
import warnings

import keras
import numpy as np

from pruning import criteria
from pruning.masks import innermost
from pruning.prune import (_check_value, check_frozen, check_pattern, compute_masks, get_masks,
                           prune_low_magnitude, pruned_weights, retrace, select, set_mask)


def _log_sparsity(model, logs):
    masks = list(get_masks(model).values())
    if logs is not None and masks:
        logs["sparsity"] = criteria.sparsity(masks)


def updates_done(optimizer):
    """How many updates `optimizer` has applied (`iterations`: a tensor, not a variable, under
    gradient accumulation)."""
    return int(keras.ops.convert_to_numpy(optimizer.iterations))


@dataclasses.dataclass(frozen=True)
class PolynomialDecay:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f)(1 - (t - t0)/(T - t0))^3 for t0 <= t <= T.

    t counts optimizer updates (`optimizer.iterations` once step t is done). The masks are
    recomputed after updates t0, t0 + frequency, ... and T, so the final sparsity is reached at
    exactly T; they only ever shrink, and after T they stay fixed while training goes on.

    Example:
      PolynomialDecay(final_sparsity=0.9, end_step=2000, frequency=100)
    """
    final_sparsity: float
    end_step: int
    initial_sparsity: float = 0.0
    begin_step: int = 0
    frequency: int = 100

    def __post_init__(self):
        for name in ("final_sparsity", "initial_sparsity"):
            if not isinstance(getattr(self, name), numbers.Real):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        for name in ("end_step", "begin_step", "frequency"):
            if not isinstance(getattr(self, name), numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not 0 <= self.initial_sparsity <= self.final_sparsity < 1:
            raise ValueError(f"need 0 <= initial_sparsity <= final_sparsity < 1, got "
                             f"initial_sparsity={self.initial_sparsity}, "
                             f"final_sparsity={self.final_sparsity}")
        if not 0 <= self.begin_step < self.end_step:
            raise ValueError(f"need 0 <= begin_step < end_step, got begin_step={self.begin_step}, "
                             f"end_step={self.end_step}")
        if self.frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {self.frequency}")

    def sparsity(self, step):
        """Target sparsity after `step` updates."""
        progress = min(max((step - self.begin_step) / (self.end_step - self.begin_step), 0.0),
                       1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * \
            (1.0 - progress) ** 3

    def last_update(self, done):
        """The last step by `done` updates (`done` or earlier) at which the masks are recomputed,
        or None before `begin_step`: where a schedule that is told the count only now and then
        (`steps_per_execution`) catches up.

        >>> [PolynomialDecay(0.5, 255, begin_step=10).last_update(t) for t in (9, 109, 254, 400)]
        [None, 10, 210, 255]
        """
        if done < self.begin_step:
            return None
        if done >= self.end_step:
            return self.end_step
        return self.begin_step + (done - self.begin_step) // self.frequency * self.frequency

    def is_update_step(self, step):
        """Whether the masks are recomputed after `step` updates."""
        return (self.begin_step <= step <= self.end_step
                and (step - self.begin_step) % self.frequency == 0) or step == self.end_step


class GradualPruning(keras.callbacks.Callback):
    """Raise the sparsity of the pruned weights along `schedule` (a `PolynomialDecay`) during fit.

    `criterion` is "global-sparsity" (one cut over all pruned weights) or "layer-sparsity";
    `layers`, `pattern` and `norm` as in `prune_low_magnitude` ("1x4" blocks, "2:4", "units",
    "inputs"). `final_sparsities` ({weight key: sparsity}, layer-sparsity only, e.g. from
    `allocate_sparsity`): each weight's own final sparsity, all reached together, each weight at
    every step at the same fraction of its own final as the schedule is of its final_sparsity.
    A model without masks gets dense ones on the weights `layers` chooses (default all) when
    training begins.

    The masks are recomputed after the steps the schedule names, counted in optimizer updates;
    with `steps_per_execution` k > 1 Keras hands control back every k steps, so an update falls
    on the first boundary at or after its step (with the sparsity of its step): choose a
    `frequency` and `end_step` that are multiples of k for the exact schedule.

    Example:
      schedule = pruning.PolynomialDecay(final_sparsity=0.8, end_step=1000)
      model.fit(x, y, epochs=10, callbacks=[pruning.GradualPruning(schedule)])
    """

    def __init__(self, schedule, criterion="global-sparsity", *, layers=None, pattern=None,
                 norm="l1", final_sparsities=None, block=None):
        super().__init__()
        if not isinstance(schedule, PolynomialDecay):
            raise ValueError(f"schedule must be a pruning.PolynomialDecay, got {schedule!r}: "
                             f"e.g. GradualPruning(PolynomialDecay(final_sparsity=0.8, "
                             f"end_step=1000))")
        if criterion not in ("layer-sparsity", "global-sparsity"):
            raise ValueError(f"criterion: gradual pruning needs layer-sparsity or "
                             f"global-sparsity, got {criterion!r}")
        self.schedule, self.criterion, self.layers = schedule, criterion, layers
        self.pattern = check_pattern(pattern, block, norm, "GradualPruning")
        self.norm = norm
        if final_sparsities is not None:
            if criterion != "layer-sparsity":
                raise ValueError("final_sparsities: per-weight targets need criterion "
                                 "layer-sparsity")
            if not isinstance(final_sparsities, dict) or not final_sparsities or not all(
                    isinstance(v, numbers.Real) and 0 <= v < 1
                    for v in final_sparsities.values()):
                raise ValueError(f"final_sparsities must map weight keys to sparsities in "
                                 f"[0, 1), got {final_sparsities!r}")
            if schedule.final_sparsity <= 0:
                raise ValueError("final_sparsities: the schedule's final_sparsity must be > 0, "
                                 "the ramp each weight follows in proportion")
        self.final_sparsities = final_sparsities
        self._carrier = None

    def on_train_begin(self, logs=None):
        model = self.model
        done = updates_done(model.optimizer)
        pruned = pruned_weights(model)
        weights = pruned or select(model, self.layers)
        self._check_not_over(done, weights)
        # Everything checked before the model is touched: a refusal leaves it as it was.
        check_frozen(model, weights, "GradualPruning")
        if self.final_sparsities is not None and set(self.final_sparsities) != {
                w.key for w in weights}:
            raise ValueError(f"final_sparsities names {sorted(self.final_sparsities)}, the "
                             f"pruned weights are {sorted(w.key for w in weights)}")
        if not pruned:
            prune_low_magnitude(model, self.criterion, 0.0, layers=self.layers,
                                pattern=self.pattern, norm=self.norm)
        self._weights = pruned_weights(model)
        for weight in self._weights:
            weight.pruning_mask.pattern = str(self.pattern)
        self._accumulate = getattr(innermost(model.optimizer), "gradient_accumulation_steps",
                                   None) or 1
        self._start, self._steps, self._epoch_start, self._applied = done, 0, 0, -1
        self._resumed = False
        if keras.backend.backend() == "jax":
            self._carrier = _JaxCarrier(model, [w.pruning_mask.mask for w in self._weights])
        self._update(done)

    def _check_not_over(self, done, weights):
        """A schedule already over is a mistake (its whole ramp would be one cut), unless the
        weights are as sparse as its end leaves them: a fit resumed after the ramp
        (BackupAndRestore), which then keeps them so."""
        if done >= self.schedule.end_step and not self._at_end(weights):
            raise ValueError(
                f"GradualPruning: the schedule ends at step {self.schedule.end_step}, but the "
                f"optimizer has made {done} updates already (steps count optimizer.iterations); "
                f"e.g. PolynomialDecay(..., begin_step={done}, end_step={done} + N)")

    def _resume(self):
        """Count from the optimizer's updates again, once, when every callback's on_train_begin
        has run: a BackupAndRestore listed after this callback restores the count, and the
        weights with their zeros, after this one's on_train_begin read them. The masks are
        computed again from the restored weights, as in the other order."""
        self._resumed = True
        done = updates_done(self.model.optimizer)
        if done != self._start:
            self._check_not_over(done, self._weights)
            self._start, self._steps, self._epoch_start, self._applied = done, 0, 0, -1
            self._update(done)

    def _at_end(self, weights):
        """Whether `weights` hold as many exact zeros as the schedule's end leaves (within one
        point: blocks and groups round): each weight its own final sparsity under
        layer-sparsity, all of them together under global-sparsity."""
        zeros = [float(np.mean(keras.ops.convert_to_numpy(w.variable.value) == 0))
                 for w in weights]
        if self.criterion == "global-sparsity":
            sizes = [int(np.prod(w.variable.shape)) for w in weights]
            return np.average(zeros, weights=sizes) >= self.schedule.final_sparsity - 0.01
        final = [self.schedule.final_sparsity if self.final_sparsities is None
                 else self.final_sparsities.get(w.key, 0.0) for w in weights]
        return all(z >= f - 0.01 for z, f in zip(zeros, final))

    def on_epoch_begin(self, epoch, logs=None):
        if not self._resumed:
            self._resume()
        self._epoch_start = self._steps

    def on_train_batch_end(self, batch, logs=None):
        # Counted here, not read from the optimizer: on JAX a read would sync the whole state.
        self._steps = self._epoch_start + batch + 1
        self._update(self._start + self._steps // self._accumulate)

    def _due(self, done):
        """The schedule's last update step by `done`, if not applied yet."""
        step = self.schedule.last_update(done)
        return step if step is not None and step > self._applied else None

    def _update(self, done):
        step = self._due(done)
        if step is None:
            return
        self._applied = step
        self.model  # noqa: B018  on JAX the property syncs the state; the next step reads it back
        sparsity = self.schedule.sparsity(step)
        if self.final_sparsities is not None:
            sparsity = [self.final_sparsities[w.key] * sparsity / self.schedule.final_sparsity
                        for w in self._weights]
        masks = compute_masks(self._weights, self.criterion, sparsity, self.pattern, self.norm)
        # global-sparsity can empty a layer of small weights: refused, as a one-shot prune is
        criteria.check_masks(masks, [w.key for w in self._weights], self.criterion,
                             f"{np.round(sparsity, 4)} (step {step} of the schedule)")
        for weight, mask in zip(self._weights, masks):
            set_mask(weight, mask, self.pattern)

    def on_train_end(self, logs=None):
        if not self._resumed and not self._steps:  # no epoch left: resumed after the last one
            self._resume()
        if self._carrier is not None:
            self._carrier.close()
            self._carrier = None
            retrace(self.model)

    def on_epoch_end(self, epoch, logs=None):
        _log_sparsity(self.model, logs)


class _JaxCarrier:
    """On JAX, the masks among the state of the optimizer that applies the constraints, for the
    length of a fit: JAX's compiled step reads only its arguments, the model's and the
    optimizer's variables; a variable outside them is a constant of the trace, which a changed
    mask would have to retrace. The optimizer saves and loads its own variables without them, so
    a checkpoint written during the fit (ModelCheckpoint, BackupAndRestore) loads into a model
    that never ran this callback, with the optimizer's state.

    How, without the optimizer's private methods: a Keras optimizer tracks the variables in
    any list assigned to one of its attributes (as a layer does), and forgets those removed
    from that list; the masks ride in `optimizer.pruning_masks` and leave with `clear()`."""

    def __init__(self, model, masks):
        self.optimizer, self.saved, self.masks = innermost(model.optimizer), model.optimizer, masks
        left = getattr(self.saved, "_pruning_carrier", None)
        if left is not None:  # a fit that ended in an exception never reached on_train_end
            left.close()
        self.saved._pruning_carrier = self
        ids = {id(m) for m in masks}
        self.optimizer.pruning_masks = list(masks)
        if not ids <= {id(v) for v in self.optimizer.variables}:  # a Keras that no longer does
            raise RuntimeError("GradualPruning: this Keras' optimizer does not track the variables "
                               "of a list attribute; the JAX step cannot carry the masks")

        def own():
            return [v for v in self.saved.variables if id(v) not in ids]

        def save_own_variables(store):  # Optimizer.save_own_variables, without the masks
            for i, variable in enumerate(own()):
                store[str(i)] = variable.numpy()

        def load_own_variables(store):
            variables = own()
            if len(store.keys()) != len(variables):
                warnings.warn(f"Skipping variable loading for optimizer {self.saved.name!r}, "
                              f"because it has {len(variables)} variables whereas the saved "
                              f"optimizer has {len(store.keys())} variables.", stacklevel=2)
                return
            for i, variable in enumerate(variables):
                variable.assign(store[str(i)])

        self.saved.save_own_variables = save_own_variables
        self.saved.load_own_variables = load_own_variables
        retrace(model)  # the step's state now holds the masks

    def close(self):
        self.optimizer.pruning_masks.clear()
        del self.optimizer.pruning_masks
        del self.saved.save_own_variables, self.saved.load_own_variables
        del self.saved._pruning_carrier


class IterativePruning(keras.callbacks.Callback):
    """Prune further at the start of chosen epochs: `targets` = {epoch (0-based): value} of
    `criterion` (see `prune_low_magnitude`, also for `layers` and `pattern`); each round's masks
    nest in the previous ones.

    A fit resumed by Keras' BackupAndRestore after a round (its first epoch, or its end, later
    than a target's) prunes again to the last target passed, from the restored weights, whose
    pruned entries are zeros: Keras saves no constraint's variables, so without this the
    resumed fit would train the pruned weights back. With a sparsity criterion that rebuilds
    the same masks; with a threshold, weights that fine-tuning moved below it go too.

    Example:
      rounds = pruning.IterativePruning("layer-sparsity", {0: 0.5, 2: 0.75, 4: 0.9})
      model.fit(x, y, epochs=6, callbacks=[rounds])
    """

    def __init__(self, criterion, targets, *, layers=None, pattern=None, norm="l1", block=None):
        super().__init__()
        criteria.check_criterion(criterion)
        if not isinstance(targets, dict) or not targets or any(
                not isinstance(e, numbers.Integral) or isinstance(e, bool) or e < 0
                for e in targets):
            raise ValueError(f"targets must map epochs (integers >= 0) to values, got {targets!r}")
        for value in targets.values():  # a per-weight dict's too: before any epoch trains
            for one in value.values() if isinstance(value, dict) else [value]:
                _check_value(criterion, one, "a value of targets")
        self.criterion, self.targets, self.layers = criterion, dict(targets), layers
        self.pattern = check_pattern(pattern, block, norm, "IterativePruning")
        self.norm = norm
        self.on_prune = None  # called as on_prune(epoch, masks) after each pruning

    def on_train_begin(self, logs=None):
        self._first = None  # the first epoch this fit runs; it may follow a backup's last one
        for epoch, value in self.targets.items():  # refused before the first epoch trains
            if isinstance(value, dict):
                try:
                    select(self.model, list(value))  # the check its prune makes at its epoch
                except ValueError as e:
                    raise ValueError(f"IterativePruning: targets[{epoch}]: {e}") from None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first is None:
            self._first = epoch
            self._restore(epoch)
        if epoch in self.targets:
            model = self._prune(self.targets[epoch])
            if self.on_prune is not None:
                self.on_prune(epoch, get_masks(model))

    def on_train_end(self, logs=None):
        if self._first is None:  # no epoch left to run: resumed after the last one
            self._restore(self.params.get("epochs", 0))

    def _restore(self, epoch):
        """The last round before `epoch` again, if this fit resumed after one."""
        passed = [e for e in self.targets if e < epoch]
        if epoch > 0 and passed:
            self._prune(self.targets[max(passed)])

    def _prune(self, value):
        return prune_low_magnitude(self.model, self.criterion, value, layers=self.layers,
                                   pattern=self.pattern, norm=self.norm)

    def on_epoch_end(self, epoch, logs=None):
        _log_sparsity(self.model, logs)
