"""How long one training epoch takes on each Keras backend, dense and under sparse variational
dropout: which backend a long run (200 epochs) should use, and how far each is from the
machine's float32 matmul rate.

    python benchmarks/bench_epochs.py                        # lenet-5 on tensorflow, jax, torch
    python benchmarks/bench_epochs.py --backends jax --steps 50

Each backend runs in a process of its own (Keras picks its backend when it is imported). There,
stage 1's network of --network (configs.py) trains on random MNIST-shaped images with SGD
(momentum 0.9) in batches of 100, fed as the stages feed it (training/fit.dataset), XLA-compiled
50 steps a call on TensorFlow and JAX, eagerly on PyTorch (torch.compile takes minutes on 2
cores); its sparse-variational-dropout copy
(`pruning.variational_dropout`) likewise with Adam, as `--schedule variational` trains it. One
epoch of --steps steps warms up (compiling), the next is timed; an epoch of MNIST's 55,000
training images is 550 steps. The backends take turns, --rounds times: the median and range of
each. The bound: a step's floating-point work (the multiply-adds of
every conv and dense layer, x2 FLOPs, x3 for the forward pass and the two backward products) at
the rate NumPy's float32 matmul of 2048x2048 reaches in the parent process: the time the step
would take if all of it ran as fast as the best-shaped matmul. Writes
<results-dir>/epochs-<network>-<cpu|gpu>.json (default: benchmarks/results/).
"""
import sys  # noqa: I001  run by its path (python benchmarks/<name>.py) as by -m: the repo's
from pathlib import Path  # modules are one folder up
if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import json
import os
import subprocess
import time

import numpy as np

import configs
from utils import cli

BACKENDS = ("tensorflow", "jax", "torch")
CHILD = "BENCH_EPOCHS_BACKEND"  # set in a backend's own process: measure, print one JSON line
EPOCH_STEPS = 550  # MNIST's 55,000 training images in batches of 100


def parse():
    p = cli.Parser(__doc__)
    p.add_argument("--network", choices=list(configs.NETWORKS), default="lenet-5")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--steps", type=cli.positive_int, default=100,
                   help="steps of the timed epoch (and of the warm-up one) (default 100)")
    p.add_argument("--rounds", type=cli.positive_int, default=3,
                   help="times each backend is measured, in turn (default 3): the machine's "
                        "speed drifts, so one backend's run is not compared with another's alone")
    p.add_argument("--results-dir", type=cli.path,
                   default=configs.repo_path("benchmarks/results"),
                   help="folder of the results file (default %(default)s)")
    return p.parse_args()


def measure(network, steps):
    """{setting: step seconds} of the dense network and its variational copy on this process's
    backend, and the network's multiply-adds per image."""
    import keras

    import pruning
    from benchmarks.timing import EpochTimer
    from networks.builders import build_network, multiply_adds
    from training.fit import STEPS_PER_EXECUTION, dataset
    config = configs.dense_config(network)
    rng = np.random.default_rng(0)
    x = rng.random((steps * config.batch_size, 784), np.float32)
    y = rng.integers(0, 10, len(x)).astype(np.int32)
    torch = keras.backend.backend() == "torch"
    model = build_network(config)
    settings = {"dense": (model, keras.optimizers.SGD(0.01, momentum=0.9)),
                "variational": (pruning.variational_dropout(model, train_size=55000),
                                keras.optimizers.Adam(1e-3))}
    seconds = {}
    for name, (net, optimizer) in settings.items():
        net.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=not torch, steps_per_execution=1 if torch else STEPS_PER_EXECUTION)
        timer = EpochTimer()
        net.fit(dataset(x, y, config.batch_size, config.seed), epochs=2, verbose=0,
                callbacks=[timer])
        seconds[name] = timer.seconds[-1] / steps
    return seconds, multiply_adds(model)


def matmul_rate(n=2048, repeats=5):
    """FLOP/s of NumPy's float32 matmul of two n x n matrices, the best of `repeats`."""
    a, b = (np.random.default_rng(i).random((n, n), np.float32) for i in range(2))
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    args = parse()
    if os.environ.get(CHILD):
        seconds, macs = measure(args.network, args.steps)
        print(json.dumps(dict(step_s=seconds, multiply_adds=macs)))
        return
    from benchmarks.timing import machine_facts, results_file
    from utils.files import published, write_json
    name = results_file(f"epochs-{args.network}")
    with published({"--results-dir": (args.results_dir, [name])}, name) as out:  # before the work
        rate = matmul_rate()
        runs = [{backend: run_backend(backend, args) for backend in args.backends}
                for _ in range(args.rounds)]
        macs = runs[0][args.backends[0]]["multiply_adds"]
        bound_s = 2 * 3 * macs * configs.dense_config(args.network).batch_size / rate
        backends = {b: {s: epoch_times([run[b]["step_s"][s] for run in runs], bound_s)
                        for s in runs[0][b]["step_s"]} for b in args.backends}
        results = dict(machine=machine_facts(), network=args.network, steps=args.steps,
                       rounds=args.rounds, epoch_steps=EPOCH_STEPS, matmul_gflops=rate / 1e9,
                       multiply_adds_per_image=macs, bound_step_s=bound_s, backends=backends)
        write_json(out / name, results)
    print(f"{args.network}: {macs:,d} multiply-adds an image; NumPy's matmul {rate / 1e9:.1f} "
          f"GFLOP/s: a step's bound {bound_s * 1e3:.1f} ms, an epoch's "
          f"{bound_s * EPOCH_STEPS:.1f} s")
    for backend, settings in results["backends"].items():
        print(f"{backend:10s} " + "  ".join(
            f"{s} {r['epoch_s']:6.1f} s an epoch ({r['epoch_s_range'][0]:.1f}-"
            f"{r['epoch_s_range'][1]:.1f}; {r['bound_fraction']:.0%} of the bound)"
            for s, r in settings.items()))
    print(f"wrote {args.results_dir / name}")


def epoch_times(step_s, bound_s):
    """An epoch's seconds from each round's step seconds: median, range, and the bound's
    share of the median."""
    median = float(np.median(step_s))
    return dict(epoch_s=median * EPOCH_STEPS, epoch_s_range=[min(step_s) * EPOCH_STEPS,
                                                            max(step_s) * EPOCH_STEPS],
                step_s=step_s, bound_fraction=bound_s / median)


def run_backend(backend, args):
    """This script in a process of `backend`'s: {"step_s": {setting: s}, "multiply_adds"}."""
    env = dict(os.environ, KERAS_BACKEND=backend, **{CHILD: backend})
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--network",
                           args.network, "--steps", str(args.steps)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"the measurement on {backend} failed: "
                         f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    cli.run(main)
