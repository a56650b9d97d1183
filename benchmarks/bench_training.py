"""Training throughput of stage 1's real step against the float32 matmul bound at the same shapes.

    python benchmarks/bench_training.py             # 3 timed epochs of the dense network
    python benchmarks/bench_training.py --epochs 1

The bound: the same forward and backward matrix products as one training step (x W1, h1 W2,
h2 W3, the three weight gradients and the two input gradients that backprop needs), timed alone in
the same compiled-loop structure, in this same run (with the real step's batch gather, which
keeps the products from being hoisted out of the loop). The fraction printed is bound time /
step time: the share of the step the matmuls would take if nothing else cost anything.
Writes benchmarks/results/training-<cpu|gpu>.json.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import configs  # noqa: E402
from benchmarks.timing import RESULTS_DIR, machine_facts, write_results  # noqa: E402
from networks.network_dense import build_dense_network  # noqa: E402
from utils import cli  # noqa: E402
from utils.checkpoints import lock  # noqa: E402
from utils.mnist import load_mnist  # noqa: E402
from utils.training import STEPS_PER_CALL, Trainer  # noqa: E402


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
                   help="timed epochs (after one warm-up)")
    p.add_argument("--data-dir", type=cli.path)
    args = p.parse_args()
    with lock(RESULTS_DIR / "training", "results"):  # writable; one benchmark at a time
        run_benchmark(args)


def run_benchmark(args):
    """Time training epochs and the matmul bound alternately; print, write the JSON."""
    config = configs.DenseConfig()
    keras.utils.set_random_seed(config.seed)
    x, y = load_mnist(args.data_dir)["train"]
    steps = len(y) // config.batch_size
    rng = np.random.default_rng(0)

    model = build_dense_network(config)
    optimizer = keras.optimizers.SGD(configs.learning_rate(config, 0), momentum=config.momentum)
    trainer = Trainer(model, optimizer, x, y, weight_decay=config.weight_decay)
    sizes = [config.input_size, *config.hidden_sizes, config.num_classes]
    bound, flops = matmul_loop(trainer.x, sizes, config.batch_size)

    def epoch_of_matmuls():
        batches = rng.permutation(len(y))[:steps * config.batch_size].reshape(steps, -1)
        for start in range(0, steps, STEPS_PER_CALL):
            bound(tf.constant(batches[start:start + STEPS_PER_CALL], tf.int32)).numpy()

    def epoch_of_training():
        trainer.train_epoch(config.batch_size, rng, desc="timing")

    timings = {"train_step": [], "matmul_bound": []}
    for fn in (epoch_of_training, epoch_of_matmuls):  # warm-up: tracing, allocator
        fn()
    for _ in range(args.epochs):  # alternate so a slow spell of the machine hits both alike
        for name, fn in (("train_step", epoch_of_training), ("matmul_bound", epoch_of_matmuls)):
            start = time.perf_counter()
            fn()
            timings[name].append((time.perf_counter() - start) / steps)

    step, matmul = np.median(timings["train_step"]), np.median(timings["matmul_bound"])
    results = dict(machine=machine_facts(), batch_size=config.batch_size, steps_per_epoch=steps,
                   step_seconds=timings["train_step"], matmul_seconds=timings["matmul_bound"],
                   samples_per_second=config.batch_size / step, epoch_seconds=step * steps,
                   matmul_flops_per_step=flops, matmul_gflops=flops / matmul / 1e9,
                   step_matmul_gflops=flops / step / 1e9, fraction_of_bound=matmul / step)
    print(f"training step: {step * 1e3:.3f} ms ({results['samples_per_second']:,.0f} samples/s, "
          f"{step * steps:.2f} s an epoch)")
    print(f"matmul bound:  {matmul * 1e3:.3f} ms ({results['matmul_gflops']:.0f} GFLOP/s at "
          f"the step's shapes, {flops / 1e6:.0f} MFLOP a step)")
    print(f"the step runs at {results['fraction_of_bound']:.0%} of the matmul bound")
    print(f"wrote {write_results('training', results)}")


if __name__ == "__main__":
    cli.run(main)
