"""Training throughput: `model.fit` (what the scripts use) against a hand-written compiled loop,
side by side in one process, each as a fraction of the float32 matmul bound at the same shapes.

    python benchmarks/bench_training.py             # 3 timed epochs of each, dense and pruned
    python benchmarks/bench_training.py --epochs 1

Two settings: "dense" is stage 1's step (dropout 0.5, weight decay 5e-4); "pruned" is stage 2's
(no dropout, decay 1e-4) with 95% of every kernel pruned at random: `model.fit` keeps the zeros
with the `pruning` package's mask constraints, the loop by masking the gradients.
The bound: the same forward and backward matrix products as one training step (x W1, h1 W2,
h2 W3, the three weight gradients and the two input gradients that backprop needs), timed alone in
the same compiled-loop structure, in this same run (with the real step's batch gather, which
keeps the products from being hoisted out of the loop). The fraction printed is bound time /
step time: the share of the step the matmuls would take if nothing else cost anything. Each fit
epoch is timed from its first to its last batch (a callback), without fit's per-call set-up.
Writes benchmarks/results/training-<cpu|gpu>.json.
"""
import sys  # noqa: I001  run by its path (python benchmarks/<name>.py) as by -m: the repo's
from pathlib import Path  # modules are one folder up
if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import time

import keras
import numpy as np
import tensorflow as tf

import configs
import pruning
from benchmarks.timing import RESULTS_DIR, EpochTimer, machine_facts, results_file
from datasets.images import load as load_data
from networks.builders import build_network, weight_layers
from pruning.prune import set_mask
from training.evaluate import cross_entropy
from training.fit import STEPS_PER_EXECUTION, compile_for_training, dataset
from utils import cli
from utils.files import published, write_json


class CustomLoop:
    """The reference: 50 SGD steps per XLA-compiled call (a tf.range loop over batches gathered
    from in-memory constants), L2 decay added to the gradient, masked gradients. This was the
    repository's trainer before model.fit took over."""

    def __init__(self, model, optimizer, x, y, weight_decay, masks=None):
        self.model, self.optimizer = model, optimizer
        self.x, self.y = tf.constant(x), tf.constant(y)
        variables = model.trainable_variables
        masks = masks or {}
        self.masks = [tf.constant(masks[v.path], tf.float32) if v.path in masks else None
                      for v in variables]
        self.decay = [2 * weight_decay if len(v.shape) >= 2 else 0.0 for v in variables]
        self.run = tf.function(self._steps, jit_compile=True)

    def _step(self, batch):
        x, y = tf.gather(self.x, batch), tf.gather(self.y, batch)
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = tf.reduce_mean(cross_entropy(y, logits))
        grads = tape.gradient(loss, self.model.trainable_variables)
        grads = [(g + d * v if d else g) * (1 if m is None else m) for g, d, v, m in
                 zip(grads, self.decay, self.model.trainable_variables, self.masks)]
        self.optimizer.apply(grads, self.model.trainable_variables)
        return loss, tf.reduce_sum(tf.cast(tf.argmax(logits, 1, output_type=tf.int32) == y,
                                           tf.float32))

    def _steps(self, batches):
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(tf.shape(batches)[0]):
            loss, hits = self._step(batches[i])
            loss_sum, correct = loss_sum + loss, correct + hits
        return loss_sum, correct



def in_chunks(run, batches):
    """Call the compiled `run` on STEPS_PER_EXECUTION rows of `batches` at a time, waiting for
    each result."""
    for start in range(0, len(batches), STEPS_PER_EXECUTION):
        tf.nest.flatten(run(tf.constant(batches[start:start + STEPS_PER_EXECUTION],
                                        tf.int32)))[0].numpy()


def matmul_loop(x, sizes, batch_size):
    """Compiled loop doing exactly a training step's matrix products per row of `batches`."""
    rng = np.random.default_rng(0)
    weights = [tf.constant(rng.normal(0, 0.01, (a, b)).astype(np.float32))
               for a, b in zip(sizes[:-1], sizes[1:])]

    @tf.function
    def run(batches):
        total = tf.constant(0.0)
        for i in tf.range(tf.shape(batches)[0]):
            acts = [tf.gather(x, batches[i])]
            for w in weights:                                     # forward
                acts.append(tf.matmul(acts[-1], w))
            grad = acts[-1]
            for layer in reversed(range(len(weights))):           # backward
                total += tf.matmul(acts[layer], grad, transpose_a=True)[0, 0]  # dW
                if layer > 0:
                    grad = tf.matmul(grad, weights[layer], transpose_b=True)   # dX
        return total

    flops = sum(2 * batch_size * a * b * (3 if i > 0 else 2)
                for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
    return run, flops


def main():
    p = cli.Parser(__doc__)
    p.add_argument("--epochs", type=cli.positive_int, default=3,
                   help="timed epochs of each (after one warm-up)")
    p.add_argument("--data-dir", type=cli.path)
    args = p.parse_args()
    with published({"results": (RESULTS_DIR, [results_file("training")])}, "training") as out:
        write_json(out / results_file("training"), run_benchmark(args))  # one at a time
    print(f"wrote {RESULTS_DIR / results_file('training')}")


def setting(name, x, y):
    """(CustomLoop, one-epoch model.fit function, EpochTimer) for "dense" or "pruned"."""
    config = configs.DenseConfig() if name == "dense" else configs.PrunedConfig()
    keras.utils.set_random_seed(config.seed)
    masks = {}
    models = [build_network(config) for _ in range(2)]
    if name == "pruned":
        rng = np.random.default_rng(0)
        masks = {l.name: rng.random(l.kernel.shape) >= 0.95 for l in weight_layers(models[0])}
        for layer in weight_layers(models[0]):
            layer.kernel.assign(layer.kernel.numpy() * masks[layer.name])
        for weight in pruning.prunable_weights(models[1]):
            set_mask(weight, masks[weight.layer.name])
    loop = CustomLoop(models[0], keras.optimizers.SGD(0.01, momentum=config.momentum), x, y,
                      config.weight_decay, {l.kernel.path: masks[l.name]
                                            for l in weight_layers(models[0]) if masks})
    # The loop adds the decay's gradient itself and never reads the models' regularisers.
    timer = EpochTimer()
    compile_for_training(models[1], keras.optimizers.SGD(0.01, momentum=config.momentum))
    batches = dataset(x, y, config.batch_size, config.seed)

    def fit_epoch():
        models[1].fit(batches, verbose=0, shuffle=False, callbacks=[timer])
    return loop, fit_epoch, timer


def run_benchmark(args):
    """Time epochs of the loop, of model.fit and of the matmul bound, alternately; print them,
    return the results."""
    config = configs.DenseConfig()
    x, y = load_data(data_dir=args.data_dir)["train"]
    steps = len(y) // config.batch_size
    rng = np.random.default_rng(0)
    sizes = [config.input_size, *config.hidden_sizes, config.num_classes]
    bound, flops = matmul_loop(tf.constant(x), sizes, config.batch_size)

    def shuffled_batches():
        return rng.permutation(len(y))[:steps * config.batch_size].reshape(steps, -1)

    fns, timers = {"matmul_bound": lambda: in_chunks(bound, shuffled_batches())}, {}
    for name in ("dense", "pruned"):
        loop, fit_epoch, timers[f"{name}_fit"] = setting(name, x, y)
        fns[f"{name}_custom_loop"] = (lambda run: lambda: in_chunks(run, shuffled_batches()))(
            loop.run)
        fns[f"{name}_fit"] = fit_epoch
    timings = {name: [] for name in fns}
    for fn in fns.values():  # warm-up: tracing, XLA, allocator
        fn()
    for _ in range(args.epochs):  # alternate so a slow spell of the machine hits all alike
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds = timers[name].seconds[-1] if name in timers else time.perf_counter() - start
            timings[name].append(seconds / steps)

    matmul = float(np.median(timings["matmul_bound"]))
    results = dict(machine=machine_facts(), batch_size=config.batch_size, steps_per_epoch=steps,
                   steps_per_execution=STEPS_PER_EXECUTION, matmul_flops_per_step=flops,
                   matmul_gflops=flops / matmul / 1e9, step_seconds=timings, settings={})
    print(f"matmul bound: {matmul * 1e3:.3f} ms a step ({results['matmul_gflops']:.0f} GFLOP/s "
          f"at the step's shapes, {flops / 1e6:.0f} MFLOP a step)")
    for name in ("dense", "pruned"):
        loop, fit_ = (float(np.median(timings[f"{name}_{k}"])) for k in ("custom_loop", "fit"))
        results["settings"][name] = dict(
            custom_loop_step_s=loop, fit_step_s=fit_, fit_over_custom_loop=fit_ / loop,
            custom_loop_fraction_of_bound=matmul / loop, fit_fraction_of_bound=matmul / fit_,
            fit_epoch_s=fit_ * steps)
        print(f"{name:6s}  custom loop {loop * 1e3:.3f} ms a step ({matmul / loop:.0%} of the "
              f"bound)  model.fit {fit_ * 1e3:.3f} ms ({matmul / fit_:.0%}): fit takes "
              f"{fit_ / loop:.2f}x the loop's time")
    return results


if __name__ == "__main__":
    cli.run(main)
