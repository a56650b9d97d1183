"""The experiment: one frozen config per stage, with the original repo's values.

Scripts override fields by name (`--epochs 3` sets `epochs`); an unknown name is an error, so a
typo never silently runs the default. The resolved config is written as JSON next to every artifact.
"""
import dataclasses
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent  # default paths (model_dir, pics, ...) are relative to it
SEED = 123  # seeds TensorFlow, NumPy and Python in every script


@dataclass(frozen=True)
class DenseConfig:
    """Stage 1: train the dense 784-512-512-10 classifier."""
    input_size: int = 784                    # flattened 28x28 pixels
    num_classes: int = 10
    hidden_sizes: tuple = (512, 512)         # units of each hidden ReLU layer
    dropout: float = 0.5                     # drop probability after each hidden layer
    weight_decay: float = 5e-4               # L2: decay x sum of squared kernel entries (no biases)
    momentum: float = 0.9                    # SGD momentum
    batch_size: int = 100
    epochs: int = 25
    lr_boundaries: tuple = (10, 20)          # epochs after which the learning rate steps down
    lr_values: tuple = (1e-2, 1e-3, 1e-4)    # learning rate before/between/after the boundaries
    init_stddev: float = 0.01                # truncated-normal stddev of the kernels
    init_bias: float = 0.1                   # constant initial bias
    seed: int = SEED
    model_dir: str = "saved_models/network_dense"


@dataclass(frozen=True)
class PrunedConfig(DenseConfig):
    """Stage 2: prune the stage-1 weights by magnitude, then fine-tune under the mask."""
    dropout: float = 0.0
    weight_decay: float = 1e-4
    criterion: str = "threshold"             # threshold | std | layer-sparsity | global-sparsity
    threshold: float = 0.03                  # threshold: prune |w| < threshold
    quality: float = 1.0                     # std: prune |w| < quality x std of the layer
    sparsity: float = 0.95                   # layer-/global-sparsity: fraction of weights pruned
    schedule: str = "one-shot"               # one-shot | iterative | gradual (utils/schedules.py)
    rounds: int = 3                          # iterative: prune -> fine-tune rounds
    initial_sparsity: float = 0.0            # gradual: sparsity at the first mask update
    prune_every: int = 100                   # gradual: steps between mask updates
    ramp_fraction: float = 0.5               # gradual: share of the fine-tuning steps spent ramping
    epochs: int = 20
    lr_boundaries: tuple = (10,)
    lr_values: tuple = (1e-3, 1e-4)
    model_dir: str = "saved_models/network_dense_pruned"


@dataclass(frozen=True)
class SparseConfig:
    """Stage 3: deploy the pruned network with sparse weight matrices."""
    batch_size: int = 100                    # evaluation batch
    seed: int = SEED
    model_dir: str = "saved_models/network_sparse"


# --quick: smoke-test scale. One epoch on 2,000 images barely moves the weights out of their
# +-0.02 initial range, so the quick prune uses a lower threshold than 0.03 (which prunes all).
QUICK = dict(train_size=2000, val_size=500, test_size=1000, epochs=1, threshold=0.01)


def override(config, **changes):
    """Return `config` with the named fields replaced; `None` values are ignored.

    Raises ValueError naming the field when it does not exist, so a mistyped flag fails loudly.
    """
    changes = {k: v for k, v in changes.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown} for {type(config).__name__}; "
                         f"valid: {sorted(fields)}")
    return dataclasses.replace(config, **changes)


def repo_path(path):
    """A default path of this repo, absolute: scripts run from elsewhere find the same files."""
    return REPO / path


def learning_rate(config, epoch):
    """Learning rate for 0-based `epoch`: a piecewise-constant schedule over epochs."""
    passed = sum(epoch >= boundary for boundary in config.lr_boundaries)
    return config.lr_values[passed]
